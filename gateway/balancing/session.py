"""`balancing: session`: every request of a session goes to the same replica.

The session key is the `session_header` request header (default `x-session-id`), else the
body's `user` field; a request with neither goes to the least-loaded replica. Keys are placed
on a consistent-hash ring of the replicas in rotation (`virtual_nodes` points per replica,
scaled by weight, stable blake2b hashes so every gateway worker and restart agrees): a replica
leaving rotation moves only the sessions it held, and they come back when it returns.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Sequence

from orchestra.config import AffinityConfig
from orchestra.runtime import Bounded

from ..core.request_key import NO_KEY, RequestKey
from .load import least_loaded
from .replica import Replica

MAX_RINGS = 64  # rotations (replica sets) remembered; replicas come and go rarely


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Ring:
    """Consistent-hash ring over replica urls."""

    def __init__(self, replicas: Sequence[Replica], virtual_nodes: int) -> None:
        points: list[tuple[int, str]] = []
        for replica in replicas:
            count = max(1, round(virtual_nodes * replica.weight))
            points.extend((stable_hash(f"{replica.url}#{i}"), replica.url) for i in range(count))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._urls = [url for _, url in points]

    def owner(self, key: str) -> str:
        at = bisect.bisect(self._hashes, stable_hash(key)) % len(self._hashes)
        return self._urls[at]


class SessionAffinity:
    def __init__(self, config: AffinityConfig) -> None:
        self.header = config.session_header.lower().encode("latin-1")
        self.virtual_nodes = config.virtual_nodes
        self._rings: dict[tuple[tuple[str, float], ...], Ring] = {}
        self._counter = itertools.count()

    def bounded(self) -> Bounded:
        """Rings by replica set: sessions themselves are hashed, never stored."""
        return Bounded(len(self._rings), MAX_RINGS)

    def session_of(self, key: RequestKey) -> str | None:
        value = key.header(self.header)
        if value:
            return value
        user = key.payload.get("user")
        return user if isinstance(user, str) and user else None

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        session = self.session_of(key)
        if session is None:
            return least_loaded(candidates, next(self._counter))
        url = self._ring(candidates).owner(session)
        return next(r for r in candidates if r.url == url)

    def _ring(self, candidates: Sequence[Replica]) -> Ring:
        shape = tuple((r.url, r.weight) for r in candidates)
        ring = self._rings.get(shape)
        if ring is None:
            if len(self._rings) >= MAX_RINGS:
                self._rings.clear()
            ring = self._rings[shape] = Ring(candidates, self.virtual_nodes)
        return ring
