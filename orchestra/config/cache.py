"""The response cache's config (`gateway.cache`): read by `gateway/pipeline/cache.py`; its
store (`gateway/pipeline/cache_store.py`) is in memory, or in Redis when `redis_url` here or
`gateway.redis_url` is set.

Part of the one config model: import it from `orchestra.config`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CacheConfig(BaseModel):
    """Exact-match replies for deterministic requests (README "Response cache")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    max_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="in memory: stored bodies, in bytes, at most, per worker (in Redis: its "
        "own `maxmemory` bounds the whole)",
    )
    max_entry_bytes: int = Field(
        1024 * 1024, gt=0, description="an answer larger than this is not stored"
    )
    ttl_s: float = Field(3600.0, gt=0, description="how long a stored reply is served")
    model_ttl_s: dict[str, float] = Field(
        {}, description="served model name -> its own ttl_s (the others use ttl_s)"
    )
    shared: bool = Field(
        False, description="one cache for every API key (False: each key sees only its own)"
    )
    redis_url: str | None = Field(
        None,
        description="a Redis of the cache's own (default: gateway.redis_url; neither: memory); "
        "one the rate limits and budgets do not use can evict freely (maxmemory-policy "
        "allkeys-lru)",
    )
