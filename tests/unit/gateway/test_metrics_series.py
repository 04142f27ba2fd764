"""The console charts' ring (gateway/metrics_series.py) on an injected clock: bucketing, rates,
TTFT quantiles from the fixed bins, expiry after the window, the bounds, and the swap markers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from orchestra.config import ConsoleConfig
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.metrics_series import (
    OTHER_MODEL,
    TTFT_BINS,
    Series,
    bin_value,
    ttft_bin,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_answers_land_in_their_interval_as_rates() -> None:
    clock = Clock(1_000_000.0)  # an interval start (step 10)
    series = Series(10, 60, clock=clock)
    ring = series.model("alpha")
    for status in (200, 200, 500, 503, 429, 200):
        ring.answered(status)
    ring.completion_tokens(40)
    clock.now += 10  # the next interval
    ring.answered(200)
    clock.now += 5  # half-way through it
    snap = series.snapshot()
    assert snap["step_s"] == 10 and len(snap["models"]["alpha"]["requests_per_s"]) == 6
    assert snap["t0"] == 1_000_010 - 50
    cols = snap["models"]["alpha"]
    # the earlier interval: 6 answers in 10 s; the current one: 1 in the 5 s gone so far
    assert cols["requests_per_s"][-2:] == [0.6, 0.2]
    assert cols["errors_per_s"][-2:] == [0.2, 0.0]
    assert cols["limited_per_s"][-2:] == [0.1, 0.0]
    assert cols["tokens_per_s"][-2:] == [4.0, 0.0]
    assert cols["requests_per_s"][:-2] == [0.0] * 4
    assert cols["ttft_p50_s"] == [None] * 6


def test_the_current_interval_is_divided_by_at_least_a_second() -> None:
    clock = Clock(1_000_000.2)
    series = Series(10, 60, clock=clock)
    series.model("alpha").answered(200)
    assert series.snapshot()["models"]["alpha"]["requests_per_s"][-1] == 1.0


def test_ttft_quantiles_from_the_bins() -> None:
    clock = Clock()
    series = Series(10, 60, clock=clock)
    ring = series.model("alpha")
    for _ in range(90):
        ring.first_byte(0.050)
    for _ in range(10):
        ring.first_byte(2.0)
    cols = series.snapshot()["models"]["alpha"]
    p50, p95 = cols["ttft_p50_s"][-1], cols["ttft_p95_s"][-1]
    assert p50 is not None and p95 is not None
    # a bin is 2^(1/3) wide and read at its geometric middle: within 13 % of the value
    assert abs(p50 - 0.050) / 0.050 < 0.13
    assert abs(p95 - 2.0) / 2.0 < 0.13


def test_the_current_intervals_quantiles_follow_new_first_bytes() -> None:
    """A finished interval's p50/p95 are read once; the current one's on every snapshot."""
    clock = Clock()
    series = Series(10, 60, clock=clock)
    ring = series.model("alpha")
    ring.first_byte(0.01)
    assert abs((series.snapshot()["models"]["alpha"]["ttft_p95_s"][-1] or 0) - 0.01) < 0.002
    for _ in range(9):
        ring.first_byte(1.0)
    assert abs((series.snapshot()["models"]["alpha"]["ttft_p95_s"][-1] or 0) - 1.0) < 0.13
    clock.now += 10  # finished: read (and kept) as it was
    cols = series.snapshot()["models"]["alpha"]
    assert cols["ttft_p95_s"][-2] == series.snapshot()["models"]["alpha"]["ttft_p95_s"][-2]
    assert abs((cols["ttft_p50_s"][-2] or 0) - 1.0) < 0.13 and cols["ttft_p50_s"][-1] is None


@pytest.mark.parametrize("seconds", [0.0004, 0.001, 0.0123, 0.5, 1.0, 7.7, 120.0])
def test_a_bin_reads_close_to_its_values(seconds: float) -> None:
    index = ttft_bin(seconds)
    assert 0 <= index < TTFT_BINS
    if seconds >= 0.001:
        assert abs(bin_value(index) - seconds) / seconds < 0.13


def test_the_end_bins_hold_what_is_outside() -> None:
    assert ttft_bin(0.0) == 0
    assert ttft_bin(10_000.0) == TTFT_BINS - 1
    assert bin_value(TTFT_BINS - 1) > 200


def test_intervals_expire_after_the_window_and_slots_are_reused() -> None:
    clock = Clock()
    series = Series(10, 3600, clock=clock)
    assert series.size == 360
    ring = series.model("alpha")
    for _ in range(5):
        ring.answered(500)
        ring.first_byte(0.1)
    clock.now += 3590  # still inside the hour: the oldest point
    cols = series.snapshot()["models"]["alpha"]
    assert cols["requests_per_s"][0] == 0.5 and cols["ttft_p50_s"][0] is not None
    clock.now += 10  # an hour later: gone, though nothing wrote over it
    cols = series.snapshot()["models"]["alpha"]
    assert sum(v or 0 for v in cols["requests_per_s"]) == 0
    assert cols["ttft_p50_s"] == [None] * 360
    # the same slot written again starts from zero (its old counts and bins cleared)
    ring.answered(200)
    ring.first_byte(3.0)
    cols = series.snapshot()["models"]["alpha"]
    assert cols["errors_per_s"][-1] == 0.0 and cols["requests_per_s"][-1] == 1.0
    assert cols["ttft_p50_s"][-1] == cols["ttft_p95_s"][-1]
    assert abs((cols["ttft_p50_s"][-1] or 0) - 3.0) / 3.0 < 0.13


def test_models_are_bounded() -> None:
    series = Series(10, 60, max_models=4, clock=Clock())
    rings = [series.model(f"m{i}") for i in range(10)]
    assert series.bounded().size == 4 and series.bounded().within
    assert rings[3] is rings[9] is series.model(OTHER_MODEL)
    assert series.model("m0") is rings[0]


def test_the_gateways_counting_points_feed_the_ring() -> None:
    """`ModelMetrics.answered`, `first_byte` and `count_usage` are the writers."""
    clock = Clock()
    series = Series(10, 60, clock=clock)
    metrics = GatewayMetrics(series=series)
    bound = metrics.model("alpha")
    bound.answered(200, 0.0)
    bound.answered(502, 0.0)
    bound.first_byte(0.2)
    metrics.count_usage("alpha", {"prompt_tokens": 7, "completion_tokens": 30})
    cols = series.snapshot()["models"]["alpha"]
    assert cols["requests_per_s"][-1] == 2.0 and cols["errors_per_s"][-1] == 1.0
    assert cols["tokens_per_s"][-1] == 30.0  # completion tokens only
    assert cols["ttft_p50_s"][-1] is not None


def test_markers_record_state_changes_and_expire() -> None:
    clock = Clock()
    series = Series(10, 60, max_markers=3, clock=clock)
    series.see_states({"alpha": "unknown", "beta": "cold"})  # first sightings: no marker
    series.see_states({"alpha": "ready", "beta": "cold"})  # the supervisor's first word: none
    assert series.snapshot()["markers"] == []
    clock.now += 1
    series.see_states({"alpha": "ready", "beta": "starting"})
    clock.now += 1
    series.see_states({"alpha": "ready", "beta": "ready"})
    snap = series.snapshot()
    assert [(m["model"], m["was"], m["state"]) for m in snap["markers"]] == [
        ("beta", "cold", "starting"),
        ("beta", "starting", "ready"),
    ]
    # a model with markers and no traffic still has (empty) columns to draw them on
    assert snap["models"]["beta"]["requests_per_s"] == [0.0] * 6
    for state in ("stopping", "cold", "starting"):  # at most max_markers kept
        series.see_states({"beta": state})
    assert len(series.snapshot()["markers"]) == 3
    clock.now += 61
    assert series.snapshot()["markers"] == []
    assert "beta" not in series.snapshot()["models"]


def test_follow_reads_the_states_until_cancelled() -> None:
    series = Series(10, 60, clock=Clock())
    states = iter([{"a": "cold"}, {"a": "starting"}, {"a": "ready"}])
    last = {"a": "ready"}

    def read() -> dict[str, str]:
        return next(states, last)

    async def run() -> None:
        task = asyncio.create_task(series.follow(read, 0.001))
        try:
            for _ in range(2000):
                if len(series.snapshot()["markers"]) == 2:
                    break
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert [m["state"] for m in series.snapshot()["markers"]] == ["starting", "ready"]


def test_the_configured_window_is_bounded_in_points() -> None:
    assert ConsoleConfig().chart_window_s / ConsoleConfig().chart_step_s == 360
    assert ConsoleConfig(chart_step_s=1, chart_window_s=3600).chart_step_s == 1
    with pytest.raises(ValidationError, match="at most 3600 points"):
        ConsoleConfig(chart_step_s=1, chart_window_s=7200)
