"""Seed 004's rule: cold count > threshold and > 2x the least-used hot model; hysteresis."""

from __future__ import annotations

from orchestra.supervisor.rotation import ModelDemand, decide


def models(cold: int, hot: int, since: float = 0.0, busy: bool = False) -> list[ModelDemand]:
    return [
        ModelDemand("hot-a", True, 100, resident_since=0.0),
        ModelDemand("hot-b", True, hot, resident_since=since, busy=busy),
        ModelDemand("cold", False, cold),
    ]


def test_no_swap_at_or_below_threshold() -> None:
    assert decide(models(cold=10, hot=0), threshold=10, min_residency_s=0, now=100) is None


def test_no_swap_unless_twice_the_least_used_hot() -> None:
    assert decide(models(cold=20, hot=10), threshold=10, min_residency_s=0, now=100) is None
    assert decide(models(cold=21, hot=10), threshold=10, min_residency_s=0, now=100) == (
        "cold",
        "hot-b",
    )


def test_min_residency_protects_a_fresh_model() -> None:
    fresh = models(cold=50, hot=0, since=90)
    # hot-b (0 requests) is too fresh to leave; hot-a (100) is too busy to be out-voted.
    assert decide(fresh, threshold=10, min_residency_s=30, now=100) is None
    assert decide(fresh, threshold=10, min_residency_s=30, now=120) == ("cold", "hot-b")
    only_fresh = [m for m in fresh if m.name != "hot-a"]
    assert decide(only_fresh, threshold=10, min_residency_s=30, now=100) is None
    assert decide(only_fresh, threshold=10, min_residency_s=30, now=121) == ("cold", "hot-b")


def test_busy_hot_model_is_not_swapped_out() -> None:
    busy = [m for m in models(cold=50, hot=0, busy=True) if m.name != "hot-a"]
    assert decide(busy, threshold=10, min_residency_s=0, now=100) is None
