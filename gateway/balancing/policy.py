"""The one interface of every balancing policy (one policy per module in this package).

A policy only chooses among `candidates` (never empty, already filtered to what may be
tried); it never changes a replica's health or counters (see `replica.py` for who owns them).
State a policy needs (a counter, credits, a prefix table) is its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from orchestra.runtime import Bounded

from ..core.request_key import NO_KEY, RequestKey
from .replica import Replica


class Balancer(Protocol):
    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica: ...


@runtime_checkable
class Remembering(Protocol):
    """A policy that keeps a table keyed by what requests carry (prefix blocks, session
    rings): it says how full the table is against its cap (`GET /admin/runtime`)."""

    def bounded(self) -> Bounded: ...


@runtime_checkable
class Preparing(Protocol):
    """A policy that needs an async step before it can pick (kv_aware: the prompt's tokens)."""

    async def prepare(self, candidates: Sequence[Replica], key: RequestKey) -> RequestKey: ...


async def prepared_key(
    balancer: object, candidates: Sequence[Replica], key: RequestKey
) -> RequestKey:
    """`key` as the balancer wants it for `pick`: unchanged unless the policy prepares keys.
    Called once per request, before its first pick (the proxy's)."""
    if len(candidates) < 2 or not isinstance(balancer, Preparing):
        return key
    return await balancer.prepare(candidates, key)
