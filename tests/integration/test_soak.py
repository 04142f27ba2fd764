"""A bounded soak: 10,000 mixed requests with faults injected, through one real gateway.

Reports requests, outcomes by kind, and the gateway's open FDs (/proc/<pid>/fd) and RSS
(psutil) after warm-up and at the end; asserts no gateway 500, no hang and no leak.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time

import aiohttp
import psutil
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
TOTAL = int(os.environ.get("ORCHESTRA_SOAK_REQUESTS", "10000"))
WARMUP = 200
CONCURRENCY = 16
CHAT = [{"role": "user", "content": "hi"}]


def _plan(i: int) -> tuple[str, str, bytes]:
    """(kind, path, body) for request i: a fixed mix, cycled."""
    slot = i % 20
    if slot < 11:
        body = {"model": "m", "messages": CHAT, "max_tokens": 4}
        return "chat", "/v1/chat/completions", json.dumps(body).encode()
    if slot < 16:
        body = {"model": "m", "messages": CHAT, "max_tokens": 4, "stream": True}
        return "stream", "/v1/chat/completions", json.dumps(body).encode()
    if slot < 18:
        body = {"model": "m", "prompt": "a b", "max_tokens": 3}
        return "completion", "/v1/completions", json.dumps(body).encode()
    if slot == 18:
        return "bad_json", "/v1/chat/completions", b'{"model": "m", '
    return "unknown_model", "/v1/chat/completions", b'{"model": "zz", "messages": []}'


def _code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "non-json"


def _upstream_sockets(pid: int, ports: set[int]) -> int:
    """The gateway's open connections to the upstreams (kept alive until they idle out)."""
    return sum(
        1 for c in psutil.Process(pid).net_connections("tcp") if c.raddr and c.raddr.port in ports
    )


def _gateway_figures(pid: int) -> tuple[int, float]:
    return len(os.listdir(f"/proc/{pid}/fd")), psutil.Process(pid).memory_info().rss / 2**20


async def _run(url: str, start: int, count: int, outcomes: collections.Counter[str]) -> None:
    next_index = start
    timeout = aiohttp.ClientTimeout(total=20)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal next_index
            while next_index < start + count:
                i = next_index
                next_index += 1
                kind, path, body = _plan(i)
                headers = {"content-type": "application/json"}
                async with session.post(url + path, data=body, headers=headers) as resp:
                    text = await resp.read()
                    backend = resp.headers.get("x-orchestra-backend")
                if resp.status == 500:
                    assert backend == "vllm", f"gateway's own 500: {text[:200]!r}"
                if kind == "stream" and resp.status == 200:
                    ok = text.rstrip().endswith(b"data: [DONE]") and b'"error"' not in text
                    outcomes["200" if ok else "stream_error_event"] += 1
                elif resp.status == 200:
                    outcomes["200"] += 1
                else:
                    outcomes[f"{resp.status} {_code(text)}"] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _inject(engines: list[FakeEngineProcess], stop: asyncio.Event) -> int:
    """Every 0.5 s one engine gets a short burst of a fault; returns how many bursts."""
    kinds = ["503", "no-done", "cut-mid-stream", "malformed", "500", "slow-headers"]
    bursts = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            engine = engines[bursts % len(engines)]
            fault = {"kind": kinds[bursts % len(kinds)], "count": 3, "delay": 2.0}
            async with session.post(engine.url + "/fake/fault", json=fault) as resp:
                assert resp.status == 200
            bursts += 1
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    return bursts


def test_soak(capsys: pytest.CaptureFixture[str]) -> None:
    with (
        FakeEngineProcess("--fail-rate", "0.002", name="m") as a,
        FakeEngineProcess(name="m") as b,
    ):
        config = {
            "servers": [{"name": "m", "replicas": [{"url": a.url}, {"url": b.url}]}],
            "gateway": fast_gateway_section(
                free_port(),
                timeouts={"first_byte_s": 1.0, "idle_read_s": 1.0},
                upstream_keepalive_s=0.5,
            ),
        }
        with GatewayProcess(config) as gateway:
            assert gateway.proc is not None
            pid = gateway.proc.pid
            outcomes: collections.Counter[str] = collections.Counter()
            asyncio.run(_run(gateway.url, 0, WARMUP, outcomes))
            ports = {a.port, b.port}
            # Measure with no pooled upstream socket open (keep-alive 0.5 s here).
            wait_until(lambda: _upstream_sockets(pid, ports) == 0, timeout=10, what="idle")
            fds_before, rss_before = _gateway_figures(pid)
            outcomes.clear()

            async def soak() -> int:
                stop = asyncio.Event()
                injector = asyncio.create_task(_inject([a, b], stop))
                try:
                    await _run(gateway.url, WARMUP, TOTAL, outcomes)
                finally:
                    stop.set()
                return await injector

            started = time.monotonic()
            bursts = asyncio.run(soak())
            elapsed = time.monotonic() - started
            for engine in (a, b):
                engine.set_fault("none")
            wait_until(lambda: a.stats()["active"] == 0 and b.stats()["active"] == 0, timeout=5)
            wait_until(lambda: _upstream_sockets(pid, ports) == 0, timeout=10, what="idle")
            fds_after, rss_after = _gateway_figures(pid)
    report = {
        "requests": sum(outcomes.values()),
        "seconds": round(elapsed, 1),
        "fault_bursts": bursts,
        "outcomes": dict(sorted(outcomes.items())),
        "fds": [fds_before, fds_after],
        "rss_mib": [round(rss_before, 1), round(rss_after, 1)],
    }
    with capsys.disabled():
        print(f"\nsoak: {json.dumps(report)}")
    assert report["requests"] == TOTAL
    assert fds_after <= fds_before + 5, report
    assert rss_after <= rss_before + 64, report
