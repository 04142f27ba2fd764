"""Budgets kept in Redis (`gateway.redis_url`): one spend per key for every worker and every
gateway on the same Redis, so a budget holds however a key's calls are spread.

Admission and settling are each one Lua script, atomic in Redis: admit reads the day's and the
month's spend plus what calls in flight reserved, refuses past a limit, else reserves the
call's estimate and counts it in flight; settle gives the reservation back and adds what the
call used. The windows are named by their UTC start (`...:day:<epoch>`), so a new day starts
from nothing and an old one expires. If Redis cannot be reached within `redis_timeout_s`, the
call is judged by this worker's local budgets (logged once per outage), as the rate limits do.

A Redis that lost its data (restarted without persistence) starts the current windows from
nothing: the ledger's database still holds the spend (`orchestra usage`).
"""

from __future__ import annotations

import time

from orchestra.config import Budget, GatewayConfig

from ..core.shared_redis import ERRORS, SharedRedis
from .budgets import WINDOWS, BudgetExceeded, Budgets, Reservation, limits, window_end, window_start

# KEYS: live (reserved tokens, cost, inflight; a worker that died holding reservations: they
# expire with it, a day after the last admission), day, month. ARGV: max_concurrent (or -1),
# then per limit: window (1 day, 2 month), what (1 tokens, 2 cost), limit; the last two ARGV
# are the estimate (tokens, cost). Returns {0} admitted, or {1, index of the limit, used}.
_ADMIT = """
local live = redis.call('HMGET', KEYS[1], 'tokens', 'cost', 'inflight')
local rt, rc, inflight = tonumber(live[1]) or 0, tonumber(live[2]) or 0, tonumber(live[3]) or 0
local maxc = tonumber(ARGV[1])
if maxc >= 0 and inflight >= maxc then return {1, 0, tostring(inflight)} end
local n = (#ARGV - 3) / 3
for i = 0, n - 1 do
  local w, what, limit = ARGV[2 + 3*i], ARGV[3 + 3*i], tonumber(ARGV[4 + 3*i])
  local key = KEYS[1 + tonumber(w)]
  local field = what == '1' and 'tokens' or 'cost'
  local used = (tonumber(redis.call('HGET', key, field)) or 0) + (what == '1' and rt or rc)
  if used >= limit then return {1, i + 1, tostring(used)} end
end
redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[#ARGV - 1])
redis.call('HINCRBYFLOAT', KEYS[1], 'cost', ARGV[#ARGV])
redis.call('HINCRBY', KEYS[1], 'inflight', 1)
redis.call('EXPIRE', KEYS[1], 86400)
return {0}
"""

# KEYS: live, day, month. ARGV: reserved tokens, reserved cost, used tokens, used cost, the
# day's and the month's expiry (seconds).
_SETTLE = """
redis.call('HINCRBY', KEYS[1], 'tokens', -tonumber(ARGV[1]))
redis.call('HINCRBYFLOAT', KEYS[1], 'cost', -tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'inflight', -1)
for i = 2, 3 do
  redis.call('HINCRBY', KEYS[i], 'tokens', ARGV[3])
  redis.call('HINCRBYFLOAT', KEYS[i], 'cost', ARGV[4])
  redis.call('EXPIRE', KEYS[i], ARGV[3 + i])
end
return 1
"""


class RedisBudgets(Budgets):
    def __init__(self, config: GatewayConfig, url: str) -> None:
        super().__init__()  # the local budgets: the fallback while Redis is away
        # A failed call falls back to the local budgets at once (core/shared_redis.py).
        self._redis = SharedRedis(url, config.redis_timeout_s, "budgets", "budgets are per worker")
        self._admit = self._redis.script(_ADMIT)
        self._settle = self._redis.script(_SETTLE)

    async def admit(
        self, name: str, budget: Budget | None, tokens: int, cost: float
    ) -> Reservation | None:
        if budget is None or not budget.limited:
            return None
        now = time.time()
        checks = limits(budget)
        args: list[int | float] = [budget.max_concurrent or -1]
        for kind, what, limit in checks:
            args += [1 + WINDOWS.index(kind), 1 if what == "tokens" else 2, limit]
        args += [tokens, cost]
        try:
            raw = await self._admit(keys=_keys(name, now), args=args)
        except ERRORS as exc:
            self._redis.lost(exc)
            return self.admit_here(name, budget, tokens, cost)
        self._redis.back()
        if int(raw[0]) == 0:
            return Reservation(name, budget, tokens, cost, shared=True)
        index, used = int(raw[1]), float(raw[2])
        if index == 0:
            assert budget.max_concurrent is not None
            raise BudgetExceeded(name, "max_concurrent", budget.max_concurrent, used, None)
        kind, what, limit = checks[index - 1]
        raise BudgetExceeded(name, f"{what}_per_{kind}", limit, used, window_end(kind, now))

    def settle(self, held: Reservation, tokens: int, cost: float) -> None:
        if not held.shared:
            self.settle_here(held, tokens, cost)
            return
        now = time.time()
        expiry = [int(window_end(kind, now) - now) + 3600 for kind in WINDOWS]
        args = [held.tokens, held.cost, tokens, cost, *expiry]
        self._redis.background(self._settle(keys=_keys(held.key, now), args=args))

    async def close(self) -> None:
        await self._redis.close(drain_s=2.0)  # the last settles, so a restart finds them


def _keys(name: str, now: float) -> list[str]:
    base = f"orchestra:budget:{name}"
    return [
        f"{base}:live",
        f"{base}:day:{window_start('day', now)}",
        f"{base}:month:{window_start('month', now)}",
    ]
