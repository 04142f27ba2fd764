"""The response cache's store in Redis (`cache_store.Store`): one cache for every worker and every
gateway on the same Redis, so an answer stored by one is a hit on all.

Each entry is one Redis string, `orchestra:cache:v1:<key>` (the key is `cache.cache_key`'s sha256,
which holds the scope: a key's name unless `shared`), valued `<served_by>\\n<body>`, written with
`SET ... PX <ttl>`: Redis expires it on its own clock, so workers with skewed clocks agree.

Invariants:
- A read waits at most `redis_timeout_s`; an unreachable Redis is a miss (logged once per
  outage), never an error: the call goes on to its engine.
- A write is made off the request path (`SharedRedis.background`); an answer larger than
  `max_entry_bytes` is never sent. The bound on the whole is Redis's own `maxmemory` (with an
  eviction policy: README "Response cache").
"""

from __future__ import annotations

from ..core.shared_redis import ERRORS, SharedRedis
from .cache_store import Entry

PREFIX = "orchestra:cache:v1:"  # v1: the value's layout below; another layout, another prefix
_SEP = b"\n"  # after the served name (a configured model name: no newline in it)


class RedisStore:
    def __init__(self, url: str, timeout_s: float, max_entry_bytes: int) -> None:
        self._redis = SharedRedis(url, timeout_s, "cached answers", "every cache lookup misses")
        self._max_entry = max_entry_bytes

    async def get(self, key: str) -> Entry | None:
        try:
            raw = await self._redis.client.get(PREFIX + key)
        except ERRORS as exc:
            self._redis.lost(exc)
            return None
        self._redis.back()
        if not isinstance(raw, bytes):
            return None
        served_by, sep, body = raw.partition(_SEP)
        if not sep:  # not one of ours: nothing to serve
            return None
        return Entry(body, served_by.decode())

    def put(self, key: str, body: bytes, served_by: str, ttl_s: float) -> None:
        if len(body) > self._max_entry:
            return
        value = served_by.encode() + _SEP + body
        ttl_ms = max(1, round(ttl_s * 1000))
        self._redis.background(self._redis.client.set(PREFIX + key, value, px=ttl_ms))

    def bounded(self) -> None:
        """Not this worker's to bound: Redis's `maxmemory` is."""
        return None

    async def close(self) -> None:
        await self._redis.close(drain_s=2.0)  # the last answers stored
