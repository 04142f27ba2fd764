""" "Least loaded": the one choice by load, for every policy that needs it.

A score is per unit of weight, so a replica of weight 2 takes twice the load before it looks
as busy. Ties go to the first candidate from `start`; callers pass a counter so that idle
replicas share the work instead of the first one taking it all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .replica import Replica

Score = Callable[[Replica], float]


def load_of(replica: Replica) -> float:
    """Our in-flight requests plus vLLM's scraped running+waiting, per unit of weight."""
    return (replica.outstanding + replica.load) / replica.weight


def outstanding_of(replica: Replica) -> float:
    """Our in-flight requests only, per unit of weight (blind to other clients' load)."""
    return replica.outstanding / replica.weight


def least_loaded(candidates: Sequence[Replica], start: int = 0, score: Score = load_of) -> Replica:
    """The candidate with the lowest `score`; ties go to the first from `start` (rotated)."""
    n = len(candidates)
    best = candidates[start % n]
    best_score = score(best)
    for i in range(1, n):
        replica = candidates[(start + i) % n]
        value = score(replica)
        if value < best_score:
            best, best_score = replica, value
    return best
