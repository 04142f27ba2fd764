"""Affinity figures: prefix-aware vs round robin on two real vLLM CPU engines (their own
prefix-cache counters), and session stickiness through a two-worker gateway.

Prefix workload: 8 system prompts x 3 conversations x 4 turns; each turn sends the system
prompt, the whole history (earlier user turns and the engine's own replies) and a new user
message, so a replica that served the previous turn holds most of the prompt in its cache.
Both policies run the same shape with different texts (no cross-phase hits), against the same
two engines started with --enable-prefix-caching. Hits are vLLM's own counters
(`vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total`, tokens), summed over both.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.run import REPO, _get
from orchestra.lifetime import spawn, stop_group

SYSTEMS, CONVERSATIONS, TURNS, CONCURRENCY = 8, 3, 4, 4
_WORDS = (
    "model cache token prefix replica engine router gateway latency batch stream kernel "
    "memory block window prompt answer request system user history context weight layer"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


@contextmanager
def _engine(python: Path, model: Path, port: int, core: int, log: Path) -> Iterator[str]:
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    argv += ["--served-model-name", "rr", "px", "--port", str(port), "--max-model-len", "2048"]
    argv += ["--dtype", "float32", "--enforce-eager", "--enable-prefix-caching"]
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": str(core),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    with log.open("wb") as out:
        proc = spawn(argv, stdout=out, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while _get(url + "/health") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"engine did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc, 30.0)


@contextmanager
def _gateway(config: dict[str, Any], tmp: Path) -> Iterator[str]:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with (tmp / "gateway.log").open("wb") as out:
        proc = spawn(
            [sys.executable, "-m", "orchestra.gateway", "--config", str(path)], cwd=REPO, stdout=out
        )
    url = f"http://127.0.0.1:{config['gateway']['port']}"
    try:
        deadline = time.monotonic() + 60
        while _get(url + "/health") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.1)
        yield url
    finally:
        stop_group(proc, 30.0)


def _cache_counters(urls: list[str]) -> tuple[float, float]:
    hits = queries = 0.0
    for url in urls:
        for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("vllm:prefix_cache_hits_total"):
                hits += float(line.rsplit(" ", 1)[1])
            elif line.startswith("vllm:prefix_cache_queries_total"):
                queries += float(line.rsplit(" ", 1)[1])
    return hits, queries


async def _chat(client: httpx.AsyncClient, model: str, messages: list[dict[str, str]]) -> Any:
    body = {"model": model, "messages": messages, "max_tokens": 8, "temperature": 0}
    started = time.perf_counter()
    ttft = None
    text = []
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if ttft is None:
                ttft = time.perf_counter() - started
            delta = httpx.Response(200, content=line[6:]).json()["choices"][0]["delta"]
            text.append(delta.get("content") or "")
    return ttft, "".join(text)


async def _phase(gateway: str, model: str) -> list[float]:
    rng = random.Random(f"{model}-13")
    systems = [f"[{model}] You are assistant {i}. " + _text(rng, 150) for i in range(SYSTEMS)]
    chats = [
        [{"role": "system", "content": systems[i % SYSTEMS]}]
        for i in range(SYSTEMS * CONVERSATIONS)
    ]
    rng.shuffle(chats)
    ttfts: list[float] = []
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=gateway, timeout=600) as client:

        async def turn(chat: list[dict[str, str]]) -> None:
            chat.append({"role": "user", "content": _text(rng, 60)})
            async with gate:
                ttft, reply = await _chat(client, model, chat)
            chat.append({"role": "assistant", "content": reply})
            if ttft is not None:
                ttfts.append(ttft)

        for _ in range(TURNS):
            rng.shuffle(chats)  # users come back in any order (a fixed order would let round
            await asyncio.gather(*(turn(chat) for chat in chats))  # robin stick by accident)
    return ttfts


def prefix_figures() -> dict[str, Any]:
    python = REPO / ".venv-engine" / "bin" / "python"
    model = REPO / "models" / "smollm2"
    if not python.exists() or not model.exists():
        return {"skipped": "needs `make engine model` (.venv-engine, models/smollm2)"}
    from tests.fake_engine import free_port

    out: dict[str, Any] = {"workload": f"{SYSTEMS} system prompts x {CONVERSATIONS} x {TURNS}"}
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as name, ExitStack() as stack:
        tmp = Path(name)
        urls = [
            stack.enter_context(_engine(python, model, free_port(), i % 2, tmp / f"e{i}.log"))
            for i in range(2)
        ]
        replicas = [{"url": u} for u in urls]
        config = {
            "gateway": {"port": free_port(), "workers": 1, "timeouts": {"first_byte_s": 600}},
            "servers": [
                {"name": "rr", "balancing": "round_robin", "replicas": replicas},
                {"name": "px", "balancing": "prefix_aware", "replicas": replicas},
            ],
        }
        gateway = stack.enter_context(_gateway(config, tmp))
        for policy in ("rr", "px"):
            before = _cache_counters(urls)
            ttfts = asyncio.run(_phase(gateway, policy))
            after = _cache_counters(urls)
            hits, queries = after[0] - before[0], after[1] - before[1]
            ttfts.sort()
            out[policy] = {
                "prefix_cache_hit_tokens": hits,
                "prefix_cache_query_tokens": queries,
                "hit_rate": round(hits / queries, 4) if queries else None,
                "ttft_p50_ms": round(ttfts[len(ttfts) // 2] * 1000, 1) if ttfts else None,
                "requests": len(ttfts),
            }
    if out["rr"]["hit_rate"] and out["px"]["hit_rate"] is not None:
        out["hit_rate_px_vs_rr"] = round(out["px"]["hit_rate"] / out["rr"]["hit_rate"], 3)
    return out


def session_figures(sessions: int = 40, per_session: int = 10) -> dict[str, Any]:
    """Share of each session's requests on its most-used replica, through 2 gateway workers
    (a new connection per request, so both workers route)."""
    from tests.fake_engine import FakeEngineProcess, free_port

    with tempfile.TemporaryDirectory(prefix="bench-session-") as name, ExitStack() as stack:
        engines = [
            stack.enter_context(FakeEngineProcess("--served-model-name", "s", name=n))
            for n in ("a", "b")
        ]
        config = {
            "gateway": {"port": free_port(), "workers": 2},
            "batch": {"enabled": False},  # the Batch API keeps the gateway to one process
            "servers": [
                {"name": "s", "balancing": "session", "replicas": [{"url": e.url} for e in engines]}
            ],
        }
        gateway = stack.enter_context(_gateway(config, Path(name)))
        served: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        body = {"model": "s", "prompt": "x", "max_tokens": 1}
        for n in range(per_session):
            for s in range(sessions):  # fewer than the 100 records a fake engine keeps
                headers = {"x-session-id": f"s{s}", "x-request-id": f"s{s}-{n}"}
                httpx.post(gateway + "/v1/completions", json=body, headers=headers, timeout=30)
            for engine in engines:
                for record in engine.stats()["records"]:
                    if record["path"] == "/v1/completions":
                        served[record["x_request_id"].rsplit("-", 1)[0]][engine.name] += 1
                engine.reset_stats()
        return _stickiness(served)


def _stickiness(served: dict[str, collections.Counter[str]]) -> dict[str, Any]:
    shares = [max(c.values()) / sum(c.values()) for c in served.values() if sum(c.values())]
    homes = collections.Counter(c.most_common(1)[0][0] for c in served.values() if c)
    return {
        "sessions": len(shares),
        "sessions_per_replica": dict(homes),
        "mean_share_on_one_replica": round(sum(shares) / len(shares), 4) if shares else None,
        "min_share_on_one_replica": round(min(shares), 4) if shares else None,
    }
