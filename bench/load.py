"""Closed-loop load generators: wrk (C, for non-streaming req/s and latency) and a Python
aiohttp generator (streams: TTFT, inter-token latency, chunk throughput; also the non-streaming
fallback when wrk is missing).

The Python generator runs in its own process (`python -m bench.load ...`), prints one JSON
object and exits, so the harness (rich, subprocess bookkeeping) never shares its event loop.
Only requests that *complete inside the measuring window* count; ramp-up is the same for
both legs because every round starts from idle workers.

Streams can start staggered (`stagger_s`, the bench passes one stream's length): worker i
sends its first request at i/concurrency of it, so arrivals are spread as a steady population
of that many streams spreads them, instead of one burst per stream length (all workers start
together and, streams being equally long, stay in lockstep: then TTFT measures the queue of
each burst in whichever process takes it, direct or not). TTFT is then sampled from requests
sent after the ramp (`stagger_s` in), when every worker is streaming, at their first chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from orchestra.lifetime import dies_with_this_process

_WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY")

function done(summary, latency, requests)
  local q = {}
  for i = 1, 199 do q[#q + 1] = latency:percentile(i / 2) end
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\": %d, \"duration_us\": %d, \"errors\": %d, \"status_errors\": %d, "
    .. "\"p50_us\": %f, \"p95_us\": %f, \"p99_us\": %f, \"mean_us\": %f, \"quantiles_us\": [%s]}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean,
    table.concat(q, ",")))
end
"""


def chat_body(model: str, max_tokens: int, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say something about benchmarks."}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


@dataclass
class RoundResult:
    """One leg's round at one concurrency. Latencies in seconds."""

    requests: int = 0
    errors: int = 0
    window_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    itls: list[float] = field(default_factory=list)  # per-stream mean gap between token events
    chunks: int = 0  # SSE data events received inside the window
    weight: float = 1.0  # samples in `latencies` stand for this many requests each (wrk)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    body: bytes,
    concurrency: int,
    duration_s: float,
    cpu: int | None = None,
) -> RoundResult:
    """Non-streaming POSTs with wrk (one thread): requests, errors, latency quantiles."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_LUA)
        script = f.name
    cmd = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "30s",
        "-s",
        script,
        url,
    ]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    try:
        out = subprocess.run(
            cmd,
            env={**os.environ, "BENCH_BODY": body.decode()},
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=False,
        )
    finally:
        os.unlink(script)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    n = int(data["requests"])
    quantiles = [q / 1e6 for q in data["quantiles_us"]]
    return RoundResult(
        requests=n - int(data["status_errors"]),
        errors=int(data["errors"]) + int(data["status_errors"]),
        window_s=data["duration_us"] / 1e6,
        latencies=quantiles,
        weight=n / len(quantiles) if quantiles else 1.0,
    )


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    stream: bool,
    t_end: float,
    res: RoundResult,
    start_at: float = 0.0,
    steady_at: float = 0.0,
) -> None:
    """Requests back to back from `start_at` until `t_end`; a stream's TTFT is kept when it
    was sent at `steady_at` or later (perf_counter times)."""
    headers = {"Content-Type": "application/json"}
    clock = time.perf_counter
    if start_at > clock():
        await asyncio.sleep(start_at - clock())
    while clock() < t_end:
        t0 = clock()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if not stream:
                    await resp.read()
                    t1 = clock()
                    if t1 > t_end:
                        return
                    if resp.status != 200:
                        res.errors += 1
                        continue
                    res.requests += 1
                    res.latencies.append(t1 - t0)
                    continue
                if resp.status != 200:
                    await resp.read()
                    res.errors += 1
                    continue
                first = last = 0.0
                events = 0
                async for chunk in resp.content.iter_any():
                    now = clock()
                    if now > t_end:
                        return  # leave mid-stream: the window is over
                    n = chunk.count(b"data: ")
                    if b"[DONE]" in chunk:
                        n -= 1
                    if n <= 0:
                        continue
                    res.chunks += n
                    if not events:
                        first = now
                        if t0 >= steady_at:  # counted at the first chunk, cut or not later
                            res.ttfts.append(first - t0)
                    events += n
                    last = now
                res.requests += 1
                if events > 1:
                    res.itls.append((last - first) / (events - 1))
                res.latencies.append(last - t0)
        except (aiohttp.ClientError, TimeoutError):
            res.errors += 1
            await asyncio.sleep(0.01)


async def run_python(
    url: str, body: bytes, concurrency: int, duration_s: float, stream: bool, stagger_s: float = 0
) -> RoundResult:
    """`duration_s` of closed-loop load; with `stagger_s` the workers start spread over its
    first `stagger_s` (see the module doc)."""
    res = RoundResult(window_s=duration_s)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=duration_s + 60, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        t_end = t0 + duration_s
        steady = t0 + stagger_s
        tasks = [
            asyncio.create_task(
                _worker(
                    session, url, body, stream, t_end, res, t0 + stagger_s * i / concurrency, steady
                )
            )
            for i in range(concurrency)
        ]
        _done, pending = await asyncio.wait(tasks, timeout=duration_s + 30)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return res


def run_python_subprocess(
    url: str,
    body: bytes,
    concurrency: int,
    duration_s: float,
    stream: bool,
    cpu: int | None = None,
    stagger_s: float = 0.0,
) -> RoundResult:
    """`run_python` in a child process (optionally pinned to `cpu`)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        "--url",
        url,
        "--body",
        body.decode(),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration_s),
    ]
    if stream:
        cmd.append("--stream")
    if stagger_s:
        cmd += ["--stagger", str(stagger_s)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=duration_s + 90,
        check=False,
        preexec_fn=dies_with_this_process(),  # the bench's children die with it (lifetime.py)
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-1000:]}")
    return RoundResult(**json.loads(out.stdout))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load")
    p.add_argument("--url", required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--stagger", type=float, default=0.0, help="spread the starts over seconds")
    a = p.parse_args()
    if a.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.cpu})
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    res = runner(run_python(a.url, a.body.encode(), a.concurrency, a.duration, a.stream, a.stagger))
    json.dump(res.to_json(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
