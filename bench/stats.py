"""Figures from measured rounds: merged rounds, (weighted) percentiles, one leg's summary and
the gateway-vs-direct ratios of a sweep point."""

from __future__ import annotations

from typing import Any

from bench.load import RoundResult


def merge(rounds: list[RoundResult]) -> RoundResult:
    out = RoundResult(window_s=0.0)
    for r in rounds:
        out.requests += r.requests
        out.errors += r.errors
        out.window_s += r.window_s
        out.chunks += r.chunks
        out.ttfts += r.ttfts
        out.itls += r.itls
    # wrk rounds carry quantiles standing for `weight` requests each: keep them as pairs
    out.latencies = [x for r in rounds for x in r.latencies]
    out.weight = 0.0
    out.__dict__["_weights"] = [r.weight for r in rounds for _ in r.latencies]
    return out


def percentile(values: list[float], q: float, weights: list[float] | None = None) -> float | None:
    if not values:
        return None
    if weights is None:
        weights = [1.0] * len(values)
    pairs = sorted(zip(values, weights, strict=True))
    total = sum(w for _, w in pairs)
    target, acc = q / 100 * total, 0.0
    for v, w in pairs:
        acc += w
        if acc >= target:
            return v
    return pairs[-1][0]


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 3)


def summarize(mode: str, r: RoundResult) -> dict[str, Any]:
    window = r.window_s or 1.0
    out: dict[str, Any] = {"requests": r.requests, "errors": r.errors, "window_s": round(window, 2)}
    if mode == "nonstream":
        w = r.__dict__.get("_weights")
        out |= {
            "req_per_s": round(r.requests / window, 2),
            "latency_p50_ms": _ms(percentile(r.latencies, 50, w)),
            "latency_p95_ms": _ms(percentile(r.latencies, 95, w)),
            "latency_p99_ms": _ms(percentile(r.latencies, 99, w)),
        }
    else:
        out |= {
            "streams_per_s": round(r.requests / window, 2),
            "chunks_per_s": round(r.chunks / window, 1),
            "ttft_p50_ms": _ms(percentile(r.ttfts, 50)),
            "ttft_p95_ms": _ms(percentile(r.ttfts, 95)),
            "ttft_p99_ms": _ms(percentile(r.ttfts, 99)),
            "itl_p50_ms": _ms(percentile(r.itls, 50)),
            "itl_p95_ms": _ms(percentile(r.itls, 95)),
        }
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def ratios(mode: str, direct: dict[str, Any], gw: dict[str, Any]) -> dict[str, Any]:
    if mode == "nonstream":
        return {
            "throughput_ratio_vs_direct": _ratio(gw["req_per_s"], direct["req_per_s"]),
            "added_latency_p50_ms": _diff(gw["latency_p50_ms"], direct["latency_p50_ms"]),
            "added_latency_p95_ms": _diff(gw["latency_p95_ms"], direct["latency_p95_ms"]),
            "added_latency_p99_ms": _diff(gw["latency_p99_ms"], direct["latency_p99_ms"]),
        }
    return {
        "chunk_throughput_ratio_vs_direct": _ratio(gw["chunks_per_s"], direct["chunks_per_s"]),
        "added_ttft_p50_ms": _diff(gw["ttft_p50_ms"], direct["ttft_p50_ms"]),
        "added_ttft_p95_ms": _diff(gw["ttft_p95_ms"], direct["ttft_p95_ms"]),
        "added_itl_p50_ms": _diff(gw["itl_p50_ms"], direct["itl_p50_ms"]),
    }
