"""What a request-aware policy may look at: the parsed body and the raw request headers.

Built for every proxied request, so it only holds references; policies read what they need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .balancer import Replica


@dataclass(slots=True, frozen=True)
class RequestKey:
    payload: dict[str, Any]
    headers: Sequence[tuple[bytes, bytes]] = ()  # ASGI scope headers (lower-case names)

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


NO_KEY = RequestKey({})


def load_of(replica: Replica) -> float:
    """Our in-flight requests plus vLLM's scraped running+waiting, per unit of weight."""
    return (replica.outstanding + replica.load) / replica.weight


def least_loaded(candidates: Sequence[Replica], start: int = 0) -> Replica:
    """The least-loaded candidate; ties go to the first from `start` (rotate to share)."""
    n = len(candidates)
    best = candidates[start % n]
    best_load = load_of(best)
    for i in range(1, n):
        replica = candidates[(start + i) % n]
        value = load_of(replica)
        if value < best_load:
            best, best_load = replica, value
    return best
