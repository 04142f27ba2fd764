"""The policy named by `balancing:` in a model's config, one module each in this package:
round_robin, weighted, least_outstanding, load_aware, session, prefix (prefix_aware), and the
kv/ package (kv_aware: routing on the engines' KV-cache events).

Every policy implements `policy.Balancer` and only chooses; none changes a replica's health
or counters. `Replica` and `Balancer` are importable from here too (the routing table's and
the supervisor link's import); their homes are `replica.py` and `policy.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestra.config import AffinityConfig, BalancingPolicy, KvAwareConfig

from .kv.index import KvIndex
from .kv.policy import KvAware
from .kv.tokens import Tokenizer
from .least_outstanding import LeastOutstanding
from .load_aware import LoadAware
from .policy import Balancer
from .prefix import PrefixAware
from .replica import Replica
from .round_robin import RoundRobin
from .session import SessionAffinity
from .weighted import Weighted

__all__ = ["Balancer", "KvShared", "Replica", "make_balancer"]


@dataclass(frozen=True)
class KvShared:
    """What every kv_aware model of one gateway worker shares: the index its feeds write,
    and the tokenizer client."""

    index: KvIndex
    tokenizer: Tokenizer


def make_balancer(
    policy: BalancingPolicy,
    affinity: AffinityConfig | None = None,
    kv_config: KvAwareConfig | None = None,
    kv: KvShared | None = None,
) -> Balancer:
    if policy == "kv_aware" and kv is not None:
        return KvAware(
            kv_config or KvAwareConfig(), affinity or AffinityConfig(), kv.index, kv.tokenizer
        )
    if policy == "kv_aware":  # no events to follow here (a table built without them)
        return PrefixAware(affinity or AffinityConfig())
    if policy == "prefix_aware":
        return PrefixAware(affinity or AffinityConfig())
    if policy == "session":
        return SessionAffinity(affinity or AffinityConfig())
    if policy == "weighted":
        return Weighted()
    if policy == "least_outstanding":
        return LeastOutstanding()
    if policy == "load_aware":
        return LoadAware()
    return RoundRobin()
