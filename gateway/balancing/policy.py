"""The one interface of every balancing policy (one policy per module in this package).

A policy only chooses among `candidates` (never empty, already filtered to what may be
tried); it never changes a replica's health or counters (see `replica.py` for who owns them).
State a policy needs (a counter, credits, a prefix table) is its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .key import NO_KEY, RequestKey
from .replica import Replica


class Balancer(Protocol):
    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica: ...
