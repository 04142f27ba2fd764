"""The open-loop swap bench's arithmetic (bench/swap_open.py): seeded Poisson arrivals at the
asked shares, and the figures it reports from the answers."""

from __future__ import annotations

import math

from bench.swap_open import SwapOpenOptions, _arrivals, _figures


def test_arrivals_are_seeded_sorted_and_skewed() -> None:
    opts = SwapOpenOptions(duration_s=400.0, rate=3.0)
    names = ["m60", "m30", "m10"]
    arrivals = _arrivals(opts, names)
    assert arrivals == _arrivals(opts, names)  # the same seed: both policies see the same load
    times = [t for t, _ in arrivals]
    assert times == sorted(times) and 0 <= times[0] and times[-1] < 400.0
    counts = {n: sum(1 for _, m in arrivals if m == n) for n in names}
    total = sum(counts.values())
    assert abs(total - 1200) < 4 * math.sqrt(1200)  # Poisson: 3/s x 400 s
    assert abs(counts["m60"] / total - 0.6) < 0.05
    assert abs(counts["m10"] / total - 0.1) < 0.03


def test_figures_count_swaps_failures_and_waits_per_model() -> None:
    results = [("a", 1.0, 200), ("a", 3.0, 200), ("b", 2.0, 200), ("b", 9.0, 504)]
    results += [("?", float("nan"), 598)]
    out = _figures(results, span=10.0, swaps=2.0)
    assert out["requests"] == 5 and out["answered"] == 3 and out["failed"] == 2
    assert out["swaps_per_100_requests"] == 40.0
    assert out["throughput_rps"] == 0.3
    assert out["per_model"]["a"]["wait_max_s"] == 3.0
    assert out["per_model"]["b"] == {
        "requests": 2,
        "failed": 1,
        "wait_p50_s": 2.0,
        "wait_p99_s": 2.0,
        "wait_max_s": 2.0,
    }
