"""A benchmark where the KV cache matters (`python -m bench --prefix-engines`): two real vLLM
CPU engines whose caches are sized so the long shared prefixes overflow one engine but fit in
two; round robin vs session vs prefix_aware vs kv_aware through one gateway.

Workload: SYSTEMS long system prompts (SYSTEM_WORDS words, ~1,225 tokens with the template: 9
full KV blocks of 128 tokens), CONVERSATIONS multi-turn conversations on each, TURNS turns of
USER_WORDS words; every turn resends the system prompt and the history, and CONCURRENCY requests
are in flight. Each engine holds BLOCKS KV blocks (`--num-gpu-blocks-override`). Sizes: the
shared prefixes alone are SYSTEMS x 9 = 72 blocks, more than one engine's 64 and less than two
engines' 128; with each prompt on one engine, an engine needs its 36 prompt blocks plus ~2
blocks of history per conversation (~76, about its cache); when every engine sees every prompt
(round robin) it needs 72 + ~2 per conversation of all 40 (~150), over twice its cache. A
simulation of vLLM's LRU prefix cache on these sizes, made to choose them: round robin hits
~55%, longest-prefix placement ~88%, the ideal ~88%. The first sight of a prompt is a miss
under every policy: 8 of 160 requests (5%), so p90 TTFT falls among requests placement can
help. Before each policy's phase both caches are emptied (`/reset_prefix_cache`), and each
phase uses its own texts.

Per policy: TTFT p50/p90 (streamed, first content chunk), throughput (requests/s over the
phase), prefix hit rate from the engines' own `vllm:prefix_cache_hits_total /
vllm:prefix_cache_queries_total`, the 5xx/shed rate; and the ideal placement's hit rate (each
system prompt's conversations on one engine with room for all: every full block seen before
in the same group is a hit), from the same prompts tokenized by the engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.affinity import gateway_from_config as start_gateway
from bench.run import REPO, wait_healthy
from orchestra.gateway.balancing.kv.hashing import block_hashes
from orchestra.lifetime import spawn, stop_group
from tests.conftest import scrape_total

# 160 requests a phase: the 8 first sights of a prompt (a miss under any policy) are 5% of
# them, so p90 TTFT measures the placement, not the cold starts.
SYSTEMS, SYSTEM_WORDS, CONVERSATIONS, TURNS, CONCURRENCY = 8, 1200, 5, 4, 4
USER_WORDS = 24
WORKERS = 2  # gateway workers: prefix_aware's tables are per worker, kv_aware's index is not
# Per engine: the 72 blocks of shared prefixes overflow it, and fit in two (see above).
BLOCKS = 64
POLICIES = {"rr": "round_robin", "sess": "session", "px": "prefix_aware", "kv": "kv_aware"}


WORDS = (
    "model cache token prefix replica engine router gateway latency batch stream kernel "
    "memory block window prompt answer request system user history context weight layer"
).split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def cache_counters(urls: list[str]) -> tuple[float, float]:
    """The engines' prefix-cache hits and queries (tokens), summed over `urls`."""
    hits = sum(scrape_total(url, "vllm:prefix_cache_hits_total") for url in urls)
    queries = sum(scrape_total(url, "vllm:prefix_cache_queries_total") for url in urls)
    return hits, queries


@contextmanager
def _engine(port: int, kv_ports: tuple[int, int], core: int, log: Path) -> Iterator[str]:
    python = REPO / ".venv-engine" / "bin" / "python"
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server"]
    argv += ["--model", str(REPO / "models" / "smollm2"), "--served-model-name", *POLICIES]
    argv += ["--port", str(port), "--max-model-len", "2048", "--dtype", "float32"]
    argv += ["--enforce-eager", "--enable-prefix-caching"]
    argv += ["--num-gpu-blocks-override", str(BLOCKS), "--kv-events-config"]
    argv.append(
        json.dumps(
            {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": f"tcp://*:{kv_ports[0]}",
                "replay_endpoint": f"tcp://*:{kv_ports[1]}",
            }
        )
    )
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": str(core),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_SERVER_DEV_MODE": "1",  # POST /reset_prefix_cache between phases
    }
    with log.open("wb") as out:
        proc = spawn(argv, stdout=out, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(proc, url, 900.0, "engine")
        except RuntimeError as exc:
            errors = [ln for ln in log.read_text().splitlines() if "Error" in ln]
            raise RuntimeError(f"{exc}: {errors[-5:]}") from None
        yield url
    finally:
        stop_group(proc, 30.0)


async def _turn(
    client: httpx.AsyncClient, model: str, messages: list[dict[str, str]], session: str
) -> tuple[float | None, str, int]:
    body = {"model": model, "messages": messages, "max_tokens": 8, "temperature": 0}
    started = time.perf_counter()
    ttft, text = None, []
    headers = {"x-session-id": session}
    async with client.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers
    ) as r:
        if r.status_code != 200:
            await r.aread()
            return None, "", r.status_code
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return None, "", 500
            if ttft is None:
                ttft = time.perf_counter() - started
            text.append(chunk["choices"][0]["delta"].get("content") or "")
    return ttft, "".join(text), 200


async def _phase(gateway: str, model: str) -> dict[str, Any]:
    rng = random.Random(f"{model}-prefix-cache")
    systems = [
        f"[{model}] You are assistant {i}. " + text(rng, SYSTEM_WORDS) for i in range(SYSTEMS)
    ]
    chats = [
        (f"{model}-{s}-{c}", s, [{"role": "system", "content": systems[s]}])
        for s in range(SYSTEMS)
        for c in range(CONVERSATIONS)
    ]
    ttfts: list[float] = []
    statuses: list[int] = []
    sent: list[tuple[int, list[dict[str, str]]]] = []  # (system prompt, messages) in order
    gate = asyncio.Semaphore(CONCURRENCY)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=gateway, timeout=600) as client:

        async def turn(session: str, system: int, chat: list[dict[str, str]]) -> None:
            chat.append({"role": "user", "content": text(rng, USER_WORDS)})
            async with gate:
                sent.append((system, list(chat)))
                try:
                    ttft, reply, status = await _turn(client, model, chat, session)
                except httpx.HTTPError:
                    ttft, reply, status = None, "", 599
            statuses.append(status)
            chat.append({"role": "assistant", "content": reply})
            if ttft is not None:
                ttfts.append(ttft)

        for _ in range(TURNS):
            rng.shuffle(chats)
            await asyncio.gather(*(turn(*chat) for chat in chats))
    wall = time.perf_counter() - started
    ttfts.sort()
    failed = sum(1 for s in statuses if s >= 500 or s == 429)
    return {
        "requests": len(statuses),
        "ttft_p50_ms": round(ttfts[len(ttfts) // 2] * 1000, 1) if ttfts else None,
        "ttft_p90_ms": round(ttfts[int(len(ttfts) * 0.9)] * 1000, 1) if ttfts else None,
        "throughput_rps": round(len(statuses) / wall, 3),
        "wall_s": round(wall, 1),
        "error_or_shed_rate": round(failed / len(statuses), 4) if statuses else None,
        "_sent": sent,
    }


def _ideal_hit_rate(engine: str, model: str, sent: list[tuple[int, list[dict[str, str]]]]) -> float:
    """Each system prompt's requests on one engine with room for them all: a request hits
    every leading full block some earlier request of its group computed."""
    seen: dict[int, set[int]] = {}
    hits = queries = 0
    with httpx.Client(timeout=60) as http:
        for system, messages in sent:
            body = {"model": model, "messages": messages, "add_generation_prompt": True}
            tokens = http.post(engine + "/tokenize", json=body).json()["tokens"]
            chain = block_hashes(tokens, 128, "vllm-none-hash", 10_000)
            group = seen.setdefault(system, set())
            depth = 0
            while depth < len(chain) and chain[depth] in group:
                depth += 1
            # vLLM never serves the last prompt token from the cache (it must compute it)
            hits += min(depth * 128, len(tokens) - 1) if depth else 0
            queries += len(tokens)
            group.update(chain)
    return round(hits / queries, 4) if queries else 0.0


def prefix_cache_figures() -> dict[str, Any]:
    python = REPO / ".venv-engine" / "bin" / "python"
    if not python.exists() or not (REPO / "models" / "smollm2").exists():
        return {"skipped": "needs `make engine model` (.venv-engine, models/smollm2)"}
    from tests.fake_engine import free_port

    out: dict[str, Any] = {
        "workload": f"{SYSTEMS} system prompts (~{SYSTEM_WORDS} words) x {CONVERSATIONS} "
        f"conversations x {TURNS} turns of {USER_WORDS} words, {CONCURRENCY} in flight, "
        "max_tokens 8",
        "kv_blocks_per_engine": BLOCKS,
        "gateway_workers": WORKERS,
        "block_tokens": 128,
    }
    with tempfile.TemporaryDirectory(prefix="bench-kv-") as name, ExitStack() as stack:
        tmp = Path(name)
        ports = [(free_port(), (free_port(), free_port())) for _ in range(2)]
        urls = [
            stack.enter_context(_engine(port, kv, i % 2, tmp / f"e{i}.log"))
            for i, (port, kv) in enumerate(ports)
        ]
        replicas = [
            {
                "url": url,
                "kv_events": {
                    "publisher": f"tcp://127.0.0.1:{kv[0]}",
                    "replay": f"tcp://127.0.0.1:{kv[1]}",
                },
            }
            for url, (_, kv) in zip(urls, ports, strict=True)
        ]
        plain = [{"url": r["url"]} for r in replicas]
        config = {
            "gateway": {
                "port": free_port(),
                "workers": WORKERS,
                "timeouts": {"first_byte_s": 600},
            },
            "batch": {"enabled": False},
            "servers": [
                {"name": m, "balancing": p, "replicas": replicas if p == "kv_aware" else plain}
                for m, p in POLICIES.items()
            ],
        }
        gateway = stack.enter_context(start_gateway(config, tmp))
        for model, policy in POLICIES.items():
            for url in urls:
                httpx.post(url + "/reset_prefix_cache", timeout=60)
            before = cache_counters(urls)
            figures = asyncio.run(_phase(gateway, model))
            after = cache_counters(urls)
            hits, queries = after[0] - before[0], after[1] - before[1]
            sent = figures.pop("_sent")
            figures["hit_rate"] = round(hits / queries, 4) if queries else None
            figures["ideal_hit_rate"] = _ideal_hit_rate(urls[0], model, sent)
            out[policy] = figures
    rr, kv = out["round_robin"], out["kv_aware"]
    if rr["ttft_p90_ms"] and kv["ttft_p90_ms"]:
        out["kv_vs_rr_p90_ttft_lower_x"] = round(rr["ttft_p90_ms"] / kv["ttft_p90_ms"], 2)
    if rr["throughput_rps"]:
        out["kv_vs_rr_throughput_x"] = round(kv["throughput_rps"] / rr["throughput_rps"], 2)
    if kv["ideal_hit_rate"]:
        out["kv_hit_rate_vs_ideal"] = round(kv["hit_rate"] / kv["ideal_hit_rate"], 3)
    return out
