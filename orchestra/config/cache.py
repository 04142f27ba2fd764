"""The response cache's config (`gateway.cache`): read by `gateway/pipeline/cache.py`.

Part of the one config model: import it from `orchestra.config`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CacheConfig(BaseModel):
    """Exact-match replies for deterministic requests (README "Response cache")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    max_bytes: int = Field(64 * 1024 * 1024, gt=0, description="stored bodies, in bytes, at most")
    ttl_s: float = Field(3600.0, gt=0, description="how long a stored reply is served")
    model_ttl_s: dict[str, float] = Field(
        {}, description="served model name -> its own ttl_s (the others use ttl_s)"
    )
    shared: bool = Field(
        False, description="one cache for every API key (False: each key sees only its own)"
    )
