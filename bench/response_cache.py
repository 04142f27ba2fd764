"""The response cache measured (`python -m bench.response_cache`): a hit's added time at the
gateway and a hit rate on a workload with repeats, for the memory store and the Redis store
(a real `redis-server`, started here), through one gateway worker in front of the fake engine.

- Added time: CALLS distinct prompts, each asked twice in a row (a miss, then a hit); the
  figure is the reply's own `x-orchestra-overhead-ms` (the gateway's time until the head, the
  engine's time excluded), p50 and p99 per result. Redis's writes are made off the request
  path, so the second ask waits until the entry is there (polled, not slept).
- Hit rate: REPEATS sequential calls drawing from PROMPTS prompts with weight 1/rank (a fixed
  seed); the hits, the engine's own request count, and the client's wall time per result.

Run on a quiet machine for figures to compare; the load average is printed with them.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx

from bench.stats import percentile
from tests.conftest import GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import FakeEngineProcess, free_port
from tests.redis_server import install_redis, redis_server

CALLS = 300  # distinct prompts for the added time: each a miss, then a hit
PROMPTS, REPEATS, SEED = 100, 500, 7  # the workload with repeats


def _body(prompt: str) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 8,
        "temperature": 0,
    }


@contextmanager
def _gateway(engine: FakeEngineProcess, redis_url: str | None) -> Iterator[GatewayProcess]:
    section = fast_gateway_section(free_port(), redis_url=redis_url)
    section["cache"] = {"enabled": True, "ttl_s": 3600}
    config = {"gateway": section, "servers": [{"name": "m", "url": engine.url}]}
    with GatewayProcess(config) as gw:
        yield gw


def _ask(client: httpx.Client, prompt: str) -> tuple[str, float, float]:
    """The cache's word, the gateway's added ms, the client's wall ms."""
    start = time.perf_counter()
    reply = client.post("/v1/chat/completions", json=_body(prompt))
    wall = (time.perf_counter() - start) * 1000
    reply.raise_for_status()
    return reply.headers["x-orchestra-cache"], float(reply.headers["x-orchestra-overhead-ms"]), wall


def _quantiles(values: list[float]) -> dict[str, float | None]:
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return {
        "n": len(values),
        "p50_ms": None if p50 is None else round(p50, 3),
        "p99_ms": None if p99 is None else round(p99, 3),
    }


def added_time(client: httpx.Client, tag: str) -> dict[str, Any]:
    added: dict[str, list[float]] = {"hit": [], "miss": []}
    for i in range(CALLS):
        prompt = f"{tag} added time {i}"
        said, ms, _ = _ask(client, prompt)
        added[said].append(ms)

        def hit(prompt: str = prompt) -> tuple[str, float, float] | None:
            answer = _ask(client, prompt)
            return answer if answer[0] == "hit" else None

        said, ms, _ = wait_until(hit, what="the entry stored")  # a miss here is not counted
        added[said].append(ms)
    return {result: _quantiles(values) for result, values in added.items()}


def hit_rate(client: httpx.Client, engine: FakeEngineProcess, tag: str) -> dict[str, Any]:
    draw = random.Random(SEED)
    weights = [1 / rank for rank in range(1, PROMPTS + 1)]
    prompts = draw.choices(range(PROMPTS), weights, k=REPEATS)
    before = engine.stats()["requests_total"]
    wall: dict[str, list[float]] = {"hit": [], "miss": []}
    for n in prompts:
        said, _, ms = _ask(client, f"{tag} workload {n}")
        wall[said].append(ms)
    return {
        "calls": REPEATS,
        "distinct": len(set(prompts)),
        "hits": len(wall["hit"]),
        "hit_rate": len(wall["hit"]) / REPEATS,
        "engine_requests": engine.stats()["requests_total"] - before,
        "wall": {result: _quantiles(values) for result, values in wall.items()},
    }


def measure() -> dict[str, Any]:
    why = install_redis()
    if why:
        raise SystemExit(why)
    figures: dict[str, Any] = {"load_average": os.getloadavg()}
    with ExitStack() as stack:
        engine = stack.enter_context(FakeEngineProcess("--served-model-name", "m", name="m"))
        redis_url = stack.enter_context(redis_server())
        for store, url in (("memory", None), ("redis", redis_url)):
            with _gateway(engine, url) as gw, httpx.Client(base_url=gw.url, timeout=10) as client:
                tag = f"{store} {time.time()}"  # each run's prompts its own
                figures[store] = {
                    "added_time": added_time(client, tag),
                    "workload": hit_rate(client, engine, tag),
                }
    figures["load_average_after"] = os.getloadavg()
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
