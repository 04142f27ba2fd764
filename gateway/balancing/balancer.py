"""Replica choice per model: round-robin, weighted, least-outstanding and load-aware here;
the request-aware policies (prefix_aware, session) in `gateway/balancing/`.

A balancer only chooses; it never changes a replica's health or counters (the proxy owns
`outstanding`, the health monitor owns `healthy` and `load`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestra.config import AffinityConfig, BalancingPolicy

from .key import NO_KEY, RequestKey
from .prefix import PrefixAware
from .session import SessionAffinity


@dataclass(eq=False)
class Replica:
    url: str
    weight: float = 1.0
    outstanding: int = 0  # requests this gateway has in flight to it
    healthy: bool = True
    retry_at: float = 0.0  # monotonic time of the next health probe while unhealthy
    down_reason: str = ""
    consecutive_500s: int = 0
    load: float = 0.0  # vLLM's running + waiting requests, scraped (load_aware only)
    api_key: str | None = field(default=None, repr=False)  # the engine's --api-key, if any
    smooth_weight: float = field(default=0.0, repr=False)  # weighted policy state


class Balancer(Protocol):
    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica: ...


class RoundRobin:
    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        return candidates[next(self._counter) % len(candidates)]


class Weighted:
    """Smooth weighted round-robin (as in nginx): exact proportions, evenly interleaved."""

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        total = 0.0
        best = candidates[0]
        for replica in candidates:
            replica.smooth_weight += replica.weight
            total += replica.weight
            if replica.smooth_weight > best.smooth_weight:
                best = replica
        best.smooth_weight -= total
        return best


class LeastOutstanding:
    """Fewest in-flight requests; ties broken round-robin so idle replicas share the work."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def _score(self, replica: Replica) -> float:
        return replica.outstanding / replica.weight

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        start = next(self._counter) % len(candidates)
        rotated = [*candidates[start:], *candidates[:start]]
        return min(rotated, key=self._score)


class LoadAware(LeastOutstanding):
    """Our own in-flight count plus the queue vLLM reports (other clients' load included)."""

    def _score(self, replica: Replica) -> float:
        return (replica.outstanding + replica.load) / replica.weight


def make_balancer(policy: BalancingPolicy, affinity: AffinityConfig | None = None) -> Balancer:
    if policy in ("prefix_aware", "session"):
        affinity = affinity or AffinityConfig()
        return PrefixAware(affinity) if policy == "prefix_aware" else SessionAffinity(affinity)
    if policy == "weighted":
        return Weighted()
    if policy == "least_outstanding":
        return LeastOutstanding()
    if policy == "load_aware":
        return LoadAware()
    return RoundRobin()
