"""The policy named by `balancing:` in a model's config, one module each in this package:
round_robin, weighted, least_outstanding, load_aware, session, prefix (prefix_aware).

Every policy implements `policy.Balancer` and only chooses; none changes a replica's health
or counters. `Replica` and `Balancer` are importable from here too (the routing table's and
the supervisor link's import); their homes are `replica.py` and `policy.py`.
"""

from __future__ import annotations

from orchestra.config import AffinityConfig, BalancingPolicy

from .least_outstanding import LeastOutstanding
from .load_aware import LoadAware
from .policy import Balancer
from .prefix import PrefixAware
from .replica import Replica
from .round_robin import RoundRobin
from .session import SessionAffinity
from .weighted import Weighted

__all__ = ["Balancer", "Replica", "make_balancer"]


def make_balancer(policy: BalancingPolicy, affinity: AffinityConfig | None = None) -> Balancer:
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
