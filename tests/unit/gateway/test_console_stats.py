"""Console/`top` rates from the gateway's own counters: the registry and its `/metrics` text
give the same snapshot; rates are differences over the window."""

from __future__ import annotations

from orchestra.gateway.console.stats import RateWindow, from_registry, from_text, rates
from orchestra.gateway.metrics import GatewayMetrics


def _traffic(metrics: GatewayMetrics, ok: int, failed: int, cut: int, tokens: int) -> None:
    bound = metrics.model("alpha")
    for _ in range(ok):
        bound.requests(200).inc()
        bound.ttfb_seconds.observe(0.1)
    for _ in range(failed):
        bound.requests(503).inc()
    metrics.requests.labels("alpha", "429").inc()  # a client-side refusal: not an error here
    metrics.stream_errors.labels("alpha").inc(cut)
    metrics.count_usage("alpha", {"prompt_tokens": 999, "completion_tokens": tokens})


def test_text_and_registry_agree_and_rates_are_differences() -> None:
    metrics = GatewayMetrics()
    _traffic(metrics, ok=3, failed=1, cut=0, tokens=30)
    before = from_registry(metrics.registry, at=100.0)
    assert from_text(metrics.render().decode(), at=100.0) == before
    _traffic(metrics, ok=6, failed=1, cut=1, tokens=120)
    after = from_registry(metrics.registry, at=102.0)
    assert from_text(metrics.render().decode(), at=102.0) == after

    r = rates(before, after)["alpha"]
    assert r.requests_per_s == 8 / 2  # 6 + 1 + the 429, over 2 s
    assert r.error_rate == 2 / 8  # the 503 and the stream cut
    assert r.ttft_s is not None and abs(r.ttft_s - 0.1) < 1e-9
    assert r.tokens_per_s == 120 / 2  # completion tokens only


def test_window_keeps_its_span_and_idles_to_zero() -> None:
    metrics = GatewayMetrics()
    window = RateWindow(window_s=10)
    assert window.rates() == {}
    _traffic(metrics, ok=10, failed=0, cut=0, tokens=100)
    window.add(from_registry(metrics.registry, at=0.0))
    _traffic(metrics, ok=10, failed=0, cut=0, tokens=100)
    window.add(from_registry(metrics.registry, at=5.0))
    assert window.rates()["alpha"].requests_per_s == 11 / 5
    for t in (15.0, 25.0):  # no traffic: the old samples leave the window
        window.add(from_registry(metrics.registry, at=t))
    idle = window.rates()["alpha"]
    assert idle.requests_per_s == 0 and idle.error_rate is None and idle.ttft_s is None
