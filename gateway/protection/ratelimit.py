"""The gateway's rate limiter: the local buckets (`local_ratelimit.py`), or the Redis-backed
ones (`shared_ratelimit.py`) when `gateway.redis_url` is set. `RateLimiter` is the type both
are (the Redis one extends the local one, its fallback while Redis is away)."""

from __future__ import annotations

from orchestra.config import GatewayConfig

from .local_ratelimit import RateLimiter

__all__ = ["RateLimiter", "make_limiter"]


def make_limiter(config: GatewayConfig) -> RateLimiter:
    if config.redis_url is None:
        return RateLimiter(config)
    from .shared_ratelimit import RedisRateLimiter  # the `redis` extra, imported only if used

    return RedisRateLimiter(config, config.redis_url)
