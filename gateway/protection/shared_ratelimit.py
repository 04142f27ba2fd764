"""Rate limits kept in Redis (`gateway.redis_url`): one set of buckets for every worker and
every gateway on the same Redis, so a key's limit holds however its requests are spread.

Same token buckets as `local_ratelimit.py`, updated atomically by a Lua script on Redis's own clock
(`TIME`), so workers with skewed clocks agree. If Redis cannot be reached within
`redis_timeout_s`, this worker falls back to its local buckets (each worker then enforces the
whole limit on its own until Redis answers again; logged once per outage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestra.config import ApiKey, GatewayConfig

from ..core.shared_redis import ERRORS, SharedRedis
from .local_ratelimit import (
    Bucket,
    RateLimiter,
    estimate_tokens,
    rate_limited,
    usage_total,
)

_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local function level(key, cap)
  if cap <= 0 then return nil end
  local v = redis.call('HMGET', key, 'level', 'stamp')
  local l = tonumber(v[1]) or cap
  local s = tonumber(v[2]) or now
  return math.min(cap, l + math.max(0, now - s) * cap / 60)
end
local function save(key, l)
  if l then
    redis.call('HSET', key, 'level', tostring(l), 'stamp', tostring(now))
    redis.call('EXPIRE', key, 120)
  end
end
"""

_ADMIT = (
    _BUCKET
    + """
local rc, tc, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rl, tl = level(KEYS[1], rc), level(KEYS[2], tc)
local wait = 0
if rl then wait = math.max(wait, (math.min(1, rc) - rl) * 60 / rc) end
if tl then wait = math.max(wait, (math.min(cost, tc) - tl) * 60 / tc) end
if wait <= 0 then
  wait = 0
  if rl then rl = rl - math.min(1, rc) end
  if tl then tl = tl - math.min(cost, tc) end
end
save(KEYS[1], rl)
save(KEYS[2], tl)
return {tostring(wait), tostring(rl or -1), tostring(tl or -1)}
"""
)

_SETTLE = (
    _BUCKET
    + """
local cap, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local l = level(KEYS[1], cap)
save(KEYS[1], math.min(cap, l + delta))
return 1
"""
)


class RedisRateLimiter(RateLimiter):
    def __init__(self, config: GatewayConfig, url: str) -> None:
        super().__init__(config)  # the local buckets: the fallback while Redis is away
        self._limits = {k.name: k for k in config.api_keys}
        # A failed call falls back to the local buckets at once (core/shared_redis.py).
        self._redis = SharedRedis(
            url, config.redis_timeout_s, "rate limits", "rate limits are per worker"
        )
        self._admit = self._redis.script(_ADMIT)
        self._settle = self._redis.script(_SETTLE)

    async def admit_async(
        self, key: ApiKey, payload: Mapping[str, Any], body_bytes: int
    ) -> dict[str, str]:
        limits = self._limits.get(key.name)
        if limits is None or not (limits.requests_per_minute or limits.tokens_per_minute):
            return {}
        rpm, tpm = limits.requests_per_minute or 0, limits.tokens_per_minute or 0
        cost = estimate_tokens(payload, body_bytes, self.default_completion)
        try:
            raw = await self._admit(keys=_keys(key.name), args=[rpm, tpm, cost])
        except ERRORS as exc:
            self._redis.lost(exc)
            return self.admit(key, payload, body_bytes)
        self._redis.back()
        wait, req_level, tok_level = (float(x) for x in raw)
        requests = _bucket(rpm, req_level)
        tokens = _bucket(tpm, tok_level)
        headers = self._headers(requests, tokens)
        if wait > 0:
            what = "requests" if requests is not None and requests.level < 1 else "tokens"
            raise rate_limited(key, what, wait, headers)
        return headers

    def settle(
        self, key: ApiKey, payload: Mapping[str, Any], body_bytes: int, usage: object
    ) -> None:
        limits = self._limits.get(key.name)
        tpm = limits.tokens_per_minute if limits is not None else None
        actual = usage_total(usage)
        if not tpm or actual is None:
            return
        charged = min(estimate_tokens(payload, body_bytes, self.default_completion), tpm)
        delta = charged - actual
        self._redis.background(self._settle(keys=_keys(key.name)[1:], args=[tpm, delta]))

    async def close(self) -> None:
        await self._redis.close(drain_s=2.0)  # the last settles, so the buckets hold them


def _keys(name: str) -> list[str]:
    return [f"orchestra:ratelimit:{name}:requests", f"orchestra:ratelimit:{name}:tokens"]


def _bucket(capacity: int, level: float) -> Bucket | None:
    if capacity <= 0 or level < 0:
        return None
    bucket = Bucket(capacity)
    bucket.level = level
    return bucket
