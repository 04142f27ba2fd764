from __future__ import annotations

from orchestra.supervisor.demand import Demand


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_counts_slide_out_of_the_window() -> None:
    clock = Clock()
    d = Demand(window_s=60, inflight_ttl_s=10, clock=clock)
    d.record({"a": 5})
    clock.t += 30
    d.record({"a": 3, "b": 0})
    assert d.count("a") == 8 and d.count("b") == 0
    clock.t += 31
    assert d.count("a") == 3


def test_inflight_expires_and_marks_use() -> None:
    clock = Clock()
    d = Demand(window_s=60, inflight_ttl_s=10, clock=clock)
    assert d.last_used("a") == float("-inf") and d.seconds_since_use("a") is None
    d.record({}, {"a": 2})
    assert d.inflight("a") == 2 and d.last_used("a") == clock.t
    clock.t += 11
    assert d.inflight("a") == 0
    assert d.seconds_since_use("a") == 11


def test_ensured_counts_as_use_and_starts_the_grace_clock() -> None:
    clock = Clock()
    d = Demand(window_s=60, inflight_ttl_s=10, clock=clock)
    assert d.seconds_since_ensured("a") == float("inf")
    d.ensured("a")
    clock.t += 2
    assert d.seconds_since_ensured("a") == 2 and d.seconds_since_use("a") == 2
    assert d.count("a") == 0  # an ensure is not a request: rotation counts stay the gateway's
