"""Per-key budgets (`api_keys[].budget`, and keys made at run time): tokens and cost per UTC day
and month, and requests in flight at once, held in this process. `shared_budgets.py` keeps the
same counters in Redis (`gateway.redis_url`) for every worker and gateway.

A call is admitted while its key's spend plus what the calls in flight reserved is below every
limit; it then reserves its estimate (prompt bytes / 4 + `max_tokens` x `n`, as the rate limits
estimate; its cost at the model's price) and, when it ends, the reservation is replaced by what
it really used (`settle`). So under concurrency a budget is overshot by at most what the last
calls admitted used beyond their reservation plus the last admitted call itself: never by the
calls that arrive while the budget is spent. A refusal is `BudgetExceeded`: 429, code
`budget_exceeded`, the limit and its reset in the message and headers, and `Retry-After`.

A process starts from what the usage ledger's database says the key spent in the current day
and month (`seed`); without Redis, several workers each count their own spend on top of it.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from dataclasses import dataclass, field

from orchestra.config import Budget

from ..core.errors import Overloaded

WINDOWS = ("day", "month")


def window_start(kind: str, now: float) -> int:
    """Epoch seconds of the UTC day's or month's start."""
    t = time.gmtime(now)
    day = 1 if kind == "month" else t.tm_mday
    return calendar.timegm((t.tm_year, t.tm_mon, day, 0, 0, 0))


def window_end(kind: str, now: float) -> int:
    if kind == "day":
        return window_start("day", now) + 86400
    t = time.gmtime(now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


class BudgetExceeded(Overloaded):
    code = "budget_exceeded"

    def __init__(self, name: str, what: str, limit: float, used: float, reset: int | None) -> None:
        now = time.time()
        headers = {"x-orchestra-budget-limit": f"{what}={limit:g}"}
        if reset is None:  # max_concurrent: a slot frees when a call ends
            when, wait = "when a request in flight ends", 1.0
        else:
            stamp = dt.datetime.fromtimestamp(reset, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            when, wait = f"at {stamp}", max(1.0, reset - now)
            headers["x-orchestra-budget-reset"] = stamp
        super().__init__(
            f"budget exceeded for {_who(name)}: {what} is {limit:g} (used {used:g}); "
            f"it resets {when}",
            retry_after_s=wait,
            code=self.code,
            headers=headers,
        )


TEAM = "team:"  # a team's account name: `team:<name>` (a key's name cannot hold a colon)


def _who(name: str) -> str:
    return f"team `{name[len(TEAM) :]}`" if name.startswith(TEAM) else f"key `{name}`"


@dataclass(slots=True)
class Reservation:
    """What one admitted call holds until it ends."""

    key: str
    budget: Budget
    tokens: int
    cost: float
    shared: bool = False  # made in Redis (shared_budgets.py), settled there


@dataclass(slots=True)
class Spend:
    """One key's spend in this process: the current windows', and what calls in flight hold."""

    starts: dict[str, int] = field(default_factory=dict)  # window -> its start
    tokens: dict[str, int] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    reserved_tokens: int = 0
    reserved_cost: float = 0.0
    inflight: int = 0
    next_roll: float = 0.0  # the current day's end: nothing to roll before it

    def roll(self, now: float) -> None:
        """A new day or month starts from nothing."""
        if now < self.next_roll:
            return
        self.next_roll = window_end("day", now)
        for kind in WINDOWS:
            start = window_start(kind, now)
            if self.starts.get(kind) != start:
                self.starts[kind] = start
                self.tokens[kind] = 0
                self.cost[kind] = 0.0


def limits(budget: Budget) -> list[tuple[str, str, float]]:
    """(window, what, limit) for each limit the budget sets: what is `tokens` or `cost`."""
    out: list[tuple[str, str, float]] = []
    for kind in WINDOWS:
        for what in ("tokens", "cost"):
            limit = getattr(budget, f"{what}_per_{kind}")
            if limit is not None:
                out.append((kind, what, float(limit)))
    return out


class Budgets:
    def __init__(self) -> None:
        self._spend: dict[str, Spend] = {}

    def seed(self, spent: dict[str, dict[str, tuple[int, float]]]) -> None:
        """What the ledger says each key spent: window -> key -> (tokens, cost)."""
        now = time.time()
        for kind, per_key in spent.items():
            for name, (tokens, cost) in per_key.items():
                spend = self._of(name, now)
                spend.tokens[kind] += tokens
                spend.cost[kind] += cost

    def _of(self, name: str, now: float) -> Spend:
        spend = self._spend.get(name)
        if spend is None:
            spend = self._spend[name] = Spend()
        spend.roll(now)
        return spend

    async def admit(
        self, name: str, budget: Budget | None, tokens: int, cost: float
    ) -> Reservation | None:
        """Reserve `tokens` and `cost` for one call charged to `name` (a key, or `team:<name>`)
        under `budget`, or raise BudgetExceeded."""
        if budget is None or not budget.limited:
            return None
        return self.admit_here(name, budget, tokens, cost)

    def admit_here(self, name: str, budget: Budget, tokens: int, cost: float) -> Reservation:
        now = time.time()
        spend = self._of(name, now)
        if budget.max_concurrent is not None and spend.inflight >= budget.max_concurrent:
            raise BudgetExceeded(
                name, "max_concurrent", budget.max_concurrent, spend.inflight, None
            )
        for kind, what, limit in limits(budget):
            held = spend.reserved_tokens if what == "tokens" else spend.reserved_cost
            used = (spend.tokens if what == "tokens" else spend.cost)[kind] + held
            if used >= limit:
                raise BudgetExceeded(name, f"{what}_per_{kind}", limit, used, window_end(kind, now))
        spend.reserved_tokens += tokens
        spend.reserved_cost += cost
        spend.inflight += 1
        return Reservation(name, budget, tokens, cost)

    def settle(self, held: Reservation, tokens: int, cost: float) -> None:
        """The call ended: its reservation is replaced by what it used (called where the
        answer is counted, so it never waits)."""
        self.settle_here(held, tokens, cost)

    def settle_here(self, held: Reservation, tokens: int, cost: float) -> None:
        spend = self._of(held.key, time.time())
        spend.reserved_tokens -= held.tokens
        spend.reserved_cost -= held.cost
        spend.inflight -= 1
        for kind in WINDOWS:
            spend.tokens[kind] += tokens
            spend.cost[kind] += cost

    async def close(self) -> None:
        """Nothing to close here; the Redis-backed budgets close their client."""
