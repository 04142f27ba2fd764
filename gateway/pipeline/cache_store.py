"""Where the response cache (`cache.py`) keeps its answers: one interface, `Store`, and two
stores: `MemoryStore` (this worker's, an LRU bounded by bytes) and `RedisStore`
(`cache_redis.py`: every worker's and every gateway's on the same Redis). `cache.make_store`
chooses in the lifespan: Redis when `gateway.cache.redis_url` or `gateway.redis_url` is set.

Invariants (both stores):
- An entry past its TTL is never served (memory: on the store's clock; Redis: its own expiry).
- An answer larger than `max_entry_bytes` is never stored.
- `put` never waits: the memory store writes at once, Redis's store writes off the request path,
  so a miss's answer is never delayed by storing it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from orchestra.runtime import Bounded


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes  # the whole JSON answer (a stream's, assembled)
    served_by: str


class Store(Protocol):
    async def get(self, key: str) -> Entry | None:
        """The entry stored under `key` and not expired, or None (also when unreachable)."""
        ...

    def put(self, key: str, body: bytes, served_by: str, ttl_s: float) -> None:
        """Store an answer for `ttl_s` seconds (module doc: never waits)."""
        ...

    def bounded(self) -> Bounded | None:
        """What it holds against its cap, when the cap is this worker's (`/admin/runtime`)."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """An LRU of entries bounded by the bytes of their bodies (keys and bookkeeping are small
    beside an answer; `max_bytes` bounds what clients can make it hold)."""

    def __init__(
        self, max_bytes: int, max_entry_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_bytes
        self._max_entry = min(max_entry_bytes, max_bytes)  # larger would evict all, not fit
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Entry, float]] = OrderedDict()  # -> expiry
        self._bytes = 0

    async def get(self, key: str) -> Entry | None:
        return self.lookup(key)

    def lookup(self, key: str) -> Entry | None:
        held = self._entries.get(key)
        if held is None:
            return None
        entry, expires = held
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, body: bytes, served_by: str, ttl_s: float) -> None:
        if len(body) > self._max_entry:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (Entry(body, served_by), self._clock() + ttl_s)
        self._bytes += len(body)
        while self._bytes > self._max:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        self._bytes -= len(self._entries.pop(key)[0].body)

    def __len__(self) -> int:
        return len(self._entries)

    def bounded(self) -> Bounded:
        return Bounded(self._bytes, self._max)

    async def close(self) -> None:
        """Nothing to close: the entries go with the process."""
