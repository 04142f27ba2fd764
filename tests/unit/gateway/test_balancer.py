"""Balancers only choose: proportions, interleaving, tie-breaking and load scores."""

from __future__ import annotations

import collections
import dataclasses
import itertools

import pytest

from orchestra.config import AffinityConfig
from orchestra.gateway.balancing.balancer import make_balancer
from orchestra.gateway.balancing.least_outstanding import LeastOutstanding
from orchestra.gateway.balancing.load import least_loaded
from orchestra.gateway.balancing.load_aware import LoadAware
from orchestra.gateway.balancing.replica import Replica
from orchestra.gateway.balancing.round_robin import RoundRobin
from orchestra.gateway.balancing.weighted import Weighted
from orchestra.gateway.core.request_key import RequestKey


def _replicas(*weights: float) -> list[Replica]:
    return [Replica(url=f"http://r{i}", weight=w) for i, w in enumerate(weights)]


def test_round_robin_cycles_in_order() -> None:
    replicas = _replicas(1, 1, 1)
    balancer = RoundRobin()
    picks = [balancer.pick(replicas).url for _ in range(6)]
    assert picks == ["http://r0", "http://r1", "http://r2"] * 2


def test_round_robin_survives_a_shrinking_candidate_list() -> None:
    a, b, c = _replicas(1, 1, 1)
    balancer = RoundRobin()
    balancer.pick([a, b, c])
    picks = collections.Counter(balancer.pick([a, c]) for _ in range(10))
    assert picks == {a: 5, c: 5}


def test_weighted_three_to_one_is_exact_and_interleaved() -> None:
    heavy, light = _replicas(3, 1)
    balancer = Weighted()
    picks = [balancer.pick([heavy, light]) for _ in range(400)]
    counts = collections.Counter(picks)
    assert counts[heavy] == 300
    assert counts[light] == 100
    # Smooth WRR: the light replica shows up in every window of 4, never in a burst.
    for start in range(0, 400, 4):
        assert picks[start : start + 4].count(light) == 1
    longest_run = max(len(list(g)) for _, g in itertools.groupby(picks))
    assert longest_run <= 3


def test_weighted_with_fractional_weights() -> None:
    a, b, c = _replicas(0.5, 1.5, 2.0)
    balancer = Weighted()
    counts = collections.Counter(balancer.pick([a, b, c]) for _ in range(400))
    assert (counts[a], counts[b], counts[c]) == (50, 150, 200)


def test_weighted_equal_weights_alternate() -> None:
    a, b = _replicas(1, 1)
    balancer = Weighted()
    picks = [balancer.pick([a, b]) for _ in range(10)]
    assert picks == [a, b] * 5


def test_least_outstanding_prefers_idle_replica() -> None:
    a, b, c = _replicas(1, 1, 1)
    a.outstanding, b.outstanding, c.outstanding = 5, 0, 2
    balancer = LeastOutstanding()
    assert all(balancer.pick([a, b, c]) is b for _ in range(5))


def test_least_outstanding_breaks_ties_round_robin() -> None:
    replicas = _replicas(1, 1, 1)
    balancer = LeastOutstanding()
    picks = collections.Counter(balancer.pick(replicas) for _ in range(30))
    assert set(picks.values()) == {10}


def test_least_outstanding_scales_by_weight() -> None:
    big, small = _replicas(4, 1)
    big.outstanding, small.outstanding = 3, 1  # 0.75 vs 1.0 per unit of weight
    assert LeastOutstanding().pick([big, small]) is big


def test_load_aware_adds_scraped_queue() -> None:
    a, b = _replicas(1, 1)
    a.outstanding, b.outstanding = 0, 2
    a.load = 10.0  # other clients keep replica a busy
    assert LoadAware().pick([a, b]) is b
    assert LeastOutstanding().pick([a, b]) is a  # blind to the engine's own queue


def test_balancer_never_touches_health_or_counters() -> None:
    replicas = _replicas(2, 1)
    for balancer in (RoundRobin(), Weighted(), LeastOutstanding(), LoadAware()):
        for _ in range(10):
            balancer.pick(replicas)
        assert all(r.healthy and r.outstanding == 0 for r in replicas)


def test_no_policy_writes_to_a_replica() -> None:
    affinity = AffinityConfig(block_chars=16)
    payload = {
        "messages": [
            {"role": "user", "content": "a prompt long enough to be hashed in 16-character blocks"}
        ]
    }
    for policy in POLICIES:
        replicas = _replicas(2, 1, 1)
        replicas[1].outstanding, replicas[2].load = 3, 1.5
        before = [dataclasses.asdict(r) for r in replicas]
        balancer = make_balancer(policy, affinity)
        for i in range(12):
            balancer.pick(replicas, RequestKey({**payload, "user": f"u{i % 3}"}))
        assert [dataclasses.asdict(r) for r in replicas] == before, policy


def test_weighted_credits_follow_the_url_when_the_candidates_change() -> None:
    heavy, light = _replicas(3, 1)
    balancer = Weighted()
    picks = [balancer.pick([heavy, light]) for _ in range(4)]
    assert picks.count(light) == 1
    assert balancer.pick([light]) is light  # the other one is out of rotation for a while
    counts = collections.Counter(balancer.pick([heavy, light]) for _ in range(400))
    assert (counts[heavy], counts[light]) == (300, 100)


def test_weighted_forgets_urls_long_gone() -> None:
    balancer = Weighted()
    for i in range(100):  # managed engines come and go on new ports
        balancer.pick([Replica(url=f"http://old{i}")])
    a, b = _replicas(1, 1)
    assert [balancer.pick([a, b]) for _ in range(4)] == [a, b, a, b]
    assert len(balancer._credit) <= 65


def test_least_loaded_scores_per_weight_and_rotates_ties() -> None:
    a, b, c = _replicas(1, 1, 2)
    a.outstanding, b.load, c.outstanding = 1, 1.0, 2  # 1.0 each per unit of weight
    assert [least_loaded([a, b, c], start) for start in range(4)] == [a, b, c, a]
    a.outstanding = 0
    assert all(least_loaded([a, b, c], start) is a for start in range(3))


POLICIES = (
    "round_robin",
    "weighted",
    "least_outstanding",
    "load_aware",
    "session",
    "prefix_aware",
)


@pytest.mark.parametrize(
    ("policy", "kind"),
    [
        ("round_robin", RoundRobin),
        ("weighted", Weighted),
        ("least_outstanding", LeastOutstanding),
        ("load_aware", LoadAware),
    ],
)
def test_make_balancer(policy: str, kind: type) -> None:
    assert type(make_balancer(policy)) is kind  # type: ignore[arg-type]
