"""`python -m bench.ensembles`: what ensembles cost and buy, on fake engines (figures, not tests).

- Hedging: `first` over a member with a tail (a fraction of its requests is slow) and a steady
  member, against each member alone: p50 and p99 latency, one request at a time.
- Fan-out: `all` over three members of different speeds, against the slowest member alone:
  wall time per request (goal: at most 1.1x the slowest).

Writes bench/results/ensembles.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import GatewayProcess
from tests.fake_engine import FakeEngineProcess, free_port

OUT = Path(__file__).resolve().parent / "results" / "ensembles.json"
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _latencies(client: httpx.Client, url: str, model: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        reply = client.post(url, json={**BODY, "model": model})
        reply.raise_for_status()
        out.append(time.perf_counter() - started)
    return out


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(1000 * statistics.fmean(values), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ensembles", description=__doc__)
    p.add_argument("--requests", type=int, default=300, help="per leg of the hedging figure")
    p.add_argument("--fanout-requests", type=int, default=40)
    p.add_argument("--tail-rate", type=float, default=0.05)
    p.add_argument("--tail-ms", type=float, default=1000.0)
    a = p.parse_args(argv)
    engines = {
        "tailed": FakeEngineProcess(
            "--ttft-ms", "20", "--slow-rate", str(a.tail_rate), "--slow-ms", str(a.tail_ms),
            name="tailed",
        ),
        "steady": FakeEngineProcess("--ttft-ms", "80", name="steady"),
        "m100": FakeEngineProcess("--ttft-ms", "100", name="m100"),
        "m200": FakeEngineProcess("--ttft-ms", "200", name="m200"),
        "m400": FakeEngineProcess("--ttft-ms", "400", name="m400"),
    }  # fmt: skip
    for engine in engines.values():
        engine.start()
    config = {
        "gateway": {"host": "127.0.0.1", "port": free_port()},
        "servers": [{"name": n, "url": e.url} for n, e in engines.items()],
        "ensembles": [
            {"name": "hedge", "models": ["tailed", "steady"], "strategy": "first"},
            {"name": "fanout", "models": ["m100", "m200", "m400"], "strategy": "all"},
        ],
    }
    figures: dict[str, Any] = {}
    try:
        with GatewayProcess(config) as gateway, httpx.Client(timeout=30) as client:
            url = gateway.url + "/v1/chat/completions"
            _latencies(client, url, "hedge", 5)  # warm connections
            for model in ("tailed", "steady", "hedge"):
                figures[f"hedging_{model}"] = _summary(_latencies(client, url, model, a.requests))
            for model in ("m400", "fanout"):
                values = _latencies(client, url, model, a.fanout_requests)
                figures[f"fanout_{model}"] = _summary(values)
            ratio = figures["fanout_fanout"]["p50_ms"] / figures["fanout_m400"]["p50_ms"]
            figures["fanout_all_over_slowest_p50"] = round(ratio, 3)
    finally:
        for engine in engines.values():
            engine.stop()
    figures["setup"] = {
        "tailed": f"ttft 20 ms, {a.tail_rate:.0%} of requests +{a.tail_ms:g} ms",
        "steady": "ttft 80 ms",
        "fanout": "members with ttft 100/200/400 ms; 8 tokens; one request at a time",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
