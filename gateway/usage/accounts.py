"""The gateway's usage side, built in the lifespan: the ledger, the budgets, the keys made at
run time, on one database; and `Tab`, one charged call's account from admission to its end.

A tab is opened where a call begins and closed where its answer is counted: the edge (its
counting, `edge/count.py`) for HTTP requests, the batch sender for rows. Between the two, every
`usage` a reply carries reaches it through `Call.usage` (an ensemble's members each report
theirs: the key used every member's model).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from orchestra.config import GatewayConfig, Price

from ..metrics import GatewayMetrics
from ..protection.budgets import (
    TEAM,
    WINDOWS,
    BudgetExceeded,
    Budgets,
    Reservation,
    window_start,
)
from ..protection.keys import KeyRing
from ..protection.local_ratelimit import estimate_tokens
from .keys import RuntimeKeys
from .ledger import ANONYMOUS, Ledger
from .store import UsageStore
from .tokens import Tokens

if TYPE_CHECKING:
    from ..core.call import Call


class Usage:
    def __init__(
        self,
        config: GatewayConfig,
        store: UsageStore,
        ledger: Ledger,
        budgets: Budgets,
        keys: RuntimeKeys,
    ) -> None:
        self.config = config.usage
        self.store = store
        self.ledger = ledger
        self.budgets = budgets
        self.keys = keys
        self._default_completion = config.ratelimit_default_completion_tokens
        self._config_keys = config.api_keys
        self.config_teams = config.teams
        prices = list(config.pricing.values())
        # An asked name without a price (an alias): its estimate at the dearest price.
        self._dearest: Price | None = max(
            prices, key=lambda p: p.input_per_1m + p.output_per_1m, default=None
        )

    async def start(self) -> None:
        """Tables made (if new), the keys made at run time loaded, the budgets' spend read."""
        await asyncio.to_thread(self.store.create)
        await self.keys.load()
        now = time.time()
        spent = {
            kind: await asyncio.to_thread(self.store.spent, window_start(kind, now))
            for kind in WINDOWS
        }
        teams = {k.name: k.team for k in (*self._config_keys, *self.keys.ring_keys()) if k.team}
        for per_key in spent.values():  # a team spent what its keys did
            for name, team in teams.items():
                tokens, cost = per_key.get(name, (0, 0.0))
                before = per_key.get(TEAM + team, (0, 0.0))
                per_key[TEAM + team] = (before[0] + tokens, before[1] + cost)
        self.budgets.seed(spent)

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {
            "usage-writer": self.ledger.run,
            "usage-keys": lambda: self.keys.run(self.config.keys_refresh_s),
        }

    async def close(self) -> None:
        await self.ledger.flush()
        await self.budgets.close()
        await asyncio.to_thread(self.store.close)

    def tab(self, call: Call, model: str) -> Tab:
        """`call`'s tab (set on the call), counted under `model` (a configured name)."""
        tab = Tab(self, call, model)
        call.tab = tab
        return tab

    def estimate(self, call: Call, model: str) -> tuple[int, float]:
        tokens = estimate_tokens(call.payload, call.body_size, self._default_completion)
        prompt = min(tokens, call.body_size // 4)
        price = self.ledger.price(model) or self._dearest
        cost = 0.0 if price is None else price.cost(prompt, tokens - prompt)
        return tokens, cost


def build_usage(config: GatewayConfig, metrics: GatewayMetrics, ring: KeyRing) -> Usage:
    """The usage side, on the database `config.usage` names (opened by `Usage.start`)."""
    store = UsageStore(config.usage)
    return Usage(
        config,
        store,
        Ledger(store, config.usage, config.pricing, metrics),
        make_budgets(config),
        RuntimeKeys(store, ring, config.api_keys, config.teams),
    )


def make_budgets(config: GatewayConfig) -> Budgets:
    """In this process, or in Redis when `gateway.redis_url` is set (every worker's)."""
    if config.redis_url is None:
        return Budgets()
    from ..protection.shared_budgets import RedisBudgets  # the `redis` extra: only if used

    return RedisBudgets(config, config.redis_url)


class Tab:
    """One call's account: its reservation (budgets) and the usage its replies reported."""

    __slots__ = (
        "_call",
        "_usage",
        "closed",
        "completion",
        "cost",
        "held",
        "key",
        "model",
        "prompt",
        "served",
        "tokens",
    )

    def __init__(self, usage: Usage, call: Call, model: str) -> None:
        self._usage = usage
        self._call = call
        self.key = call.api_key.name if call.api_key is not None else ANONYMOUS
        self.model = model
        self.served: set[str] = set()  # the models whose replies reported usage
        self.tokens = 0
        self.prompt = 0  # of `tokens` (the audit line's)
        self.completion = 0
        self.cost = 0.0
        self.held: list[Reservation] = []  # the key's, and its team's
        self.closed = False

    async def admit(self) -> None:
        """Reserve the call's estimate against its key's budget and its team's, or raise
        BudgetExceeded (holding nothing)."""
        key = self._call.api_key
        if key is None:
            return
        team = self._usage.config_teams.get(key.team) if key.team is not None else None
        if key.budget is None and team is None:
            return
        tokens, cost = self._usage.estimate(self._call, self.model)
        budgets = self._usage.budgets
        accounts = [(key.name, key.budget)]
        if team is not None:
            accounts.append((TEAM + str(key.team), team.budget))
        try:
            for name, budget in accounts:
                held = await budgets.admit(name, budget, tokens, cost)
                if held is not None:
                    self.held.append(held)
        except BudgetExceeded:
            for held in self.held:  # this call never ran: what it reserved goes back
                budgets.settle(held, 0, 0.0)
            self.held.clear()
            raise

    def usage(self, model: str, usage: object, *, cached: bool = False) -> None:
        """A reply's `usage` from `model`; `cached`: the response cache's answer, whose tokens
        are counted as cached (no cost, nothing against the budget: no engine computed them)."""
        tokens = Tokens.of(usage)
        if tokens is None:
            return
        if cached:
            tokens = tokens.from_cache()
        self.cost += self._usage.ledger.tokens(self.key, model, tokens)
        self.tokens += tokens.total
        self.prompt += tokens.prompt
        self.completion += tokens.completion
        self.served.add(model)

    def close(self, status: int) -> None:
        """The call's answer went out with `status`: counted, its reservation settled."""
        if self.closed:
            return
        self.closed = True
        model = next(iter(self.served)) if len(self.served) == 1 else self.model
        self._usage.ledger.answer(self.key, model, status)
        for held in self.held:
            if self.served:
                self._usage.budgets.settle(held, self.tokens, self.cost)
            elif status < 400:  # answered without a usage (a stream without include_usage)
                self._usage.budgets.settle(held, held.tokens, held.cost)
            else:
                self._usage.budgets.settle(held, 0, 0.0)
