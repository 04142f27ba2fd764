"""`python -m bench.soak --minutes 30`: memory over time under mixed traffic (issue 31).

A real gateway and supervisor (`python -m orchestra.gateway`, `python -m orchestra.supervisor`)
on fake engines (tests/fake_engine.py): two static replicas (prefix_aware and session models),
two engines publishing KV events (kv_aware), and two managed models sharing one slot
(`max_resident: 1`, so `swap-b` swaps `swap-a` out and back every `swap_every_s`). Traffic:
`bench/soak_traffic.py`, plus a batch every `batch_every_s` (uploaded, run, read, files
deleted). Every `interval_s` both processes are sampled: RSS and open FDs from psutil, tasks,
threads, gc objects and the bounded maps from their `GET /admin/runtime` (admin key / token).
After warm-up and at the end, traffic pauses for a quiet sample. Figures: `bench/soak_figures.py`;
results as JSON and a Markdown table under `--out`. Every process started here is stopped on
the way out, SIGTERM included (unwound like Ctrl-C; the children die with us anyway:
`orchestra.lifetime.spawn`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.soak_figures import map_figures, markdown, quiet_figures, series_figures
from bench.soak_stack import ADMIN_KEY, SUPERVISOR_TOKEN, Stack, soak_stack
from bench.soak_traffic import Names, Traffic

REPO = Path(__file__).resolve().parent.parent
QUIET_LIMIT_S = 30.0  # the longest a pause waits for the gateway's FDs to settle


@dataclass
class SoakOptions:
    minutes: float = 30.0
    interval_s: float = 30.0
    warmup_s: float | None = None  # None: a fifth of the run, at most 5 minutes
    workers: int = 4
    batch_every_s: float = 60.0
    swap_every_s: float = 45.0
    batch_rows: int = 20

    @property
    def warmup(self) -> float:
        if self.warmup_s is not None:
            return self.warmup_s
        return min(300.0, self.minutes * 60 / 5)


def _process(pid: int) -> dict[str, float]:
    proc = psutil.Process(pid)
    return {"rss_mb": round(proc.memory_info().rss / 2**20, 2), "fds": proc.num_fds()}


class Sampler:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.started = time.monotonic()
        self.samples: list[dict[str, Any]] = []

    async def sample(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(time.monotonic() - self.started, 1)}
        targets = {
            "gateway": (self.stack.gateway_pid, self.stack.gateway_url, ADMIN_KEY),
            "supervisor": (self.stack.supervisor_pid, self.stack.supervisor_url, SUPERVISOR_TOKEN),
        }
        for name, (pid, url, token) in targets.items():
            headers = {"authorization": f"Bearer {token}"}
            async with http.get(url + "/admin/runtime", headers=headers) as r:
                r.raise_for_status()
                runtime = await r.json()
            out[name] = {**_process(pid), **runtime}
        return out

    async def run(
        self, http: aiohttp.ClientSession, interval_s: float, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            self.samples.append(await self.sample(http))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


async def quiet_sample(traffic: Traffic, sampler: Sampler, http: aiohttp.ClientSession) -> Any:
    """Pause the traffic, wait for nothing in flight and the gateway's FDs to hold still
    (idle upstream connections close after `upstream_keepalive_s`), sample, resume."""
    await traffic.pause()
    try:
        deadline = time.monotonic() + QUIET_LIMIT_S
        last = -1
        steady = 0
        while steady < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            fds = _process(sampler.stack.gateway_pid)["fds"]
            steady = steady + 1 if fds == last else 0
            last = int(fds)
        return await sampler.sample(http)
    finally:
        traffic.resume()


async def batch_once(http: aiohttp.ClientSession, url: str, names: Names, rows: int) -> str:
    """Upload a file, run it as a batch, read the results, delete both files."""
    auth = {"authorization": f"Bearer {names.key}"}
    lines = [
        {
            "custom_id": f"row-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": names.prefix, "messages": [{"role": "user", "content": f"q {i}"}]},
        }
        for i in range(rows)
    ]
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", "".join(json.dumps(x) + "\n" for x in lines), filename="in.jsonl")
    async with http.post(url + "/v1/files", data=form, headers=auth) as r:
        file_id = (await r.json())["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    async with http.post(url + "/v1/batches", json=body, headers=auth) as r:
        batch = await r.json()
    deadline = time.monotonic() + 120
    while batch.get("status") not in ("completed", "failed", "expired", "cancelled"):
        if time.monotonic() > deadline:
            return "batch timed out"
        await asyncio.sleep(0.5)
        async with http.get(f"{url}/v1/batches/{batch['id']}", headers=auth) as r:
            batch = await r.json()
    for out in (batch.get("output_file_id"), batch.get("error_file_id")):
        if out:
            async with http.get(f"{url}/v1/files/{out}/content", headers=auth) as r:
                await r.read()
            async with http.delete(f"{url}/v1/files/{out}", headers=auth) as r:
                await r.read()
    async with http.delete(f"{url}/v1/files/{file_id}", headers=auth) as r:
        await r.read()
    return str(batch["status"])


async def every(period_s: float, stop: asyncio.Event, step: Any) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period_s)
        if not stop.is_set():
            await step()


async def soak(stack: Stack, opts: SoakOptions) -> dict[str, Any]:
    names = Names()
    traffic = Traffic(stack.gateway_url, names, opts.workers)
    sampler = Sampler(stack)
    stop = asyncio.Event()
    counts = {"batches": 0, "swaps": 0}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=150)) as http:

        async def one_batch() -> None:
            status = await batch_once(http, stack.gateway_url, names, opts.batch_rows)
            traffic.outcomes[f"batch {status}"] += 1
            counts["batches"] += 1

        async def one_swap() -> None:  # the other model in (held until it is up), then back
            for model in (names.other, names.managed):
                body = {"model": model, "messages": [{"role": "user", "content": "swap"}]}
                headers = {"authorization": f"Bearer {names.key}"}
                async with http.post(
                    stack.gateway_url + "/v1/chat/completions", json=body, headers=headers
                ) as r:
                    await r.read()
                traffic.outcomes[f"swap {model} {r.status}"] += 1
            counts["swaps"] += 1

        loops = [
            asyncio.create_task(traffic.run(stop)),
            asyncio.create_task(sampler.run(http, opts.interval_s, stop)),
            asyncio.create_task(every(opts.batch_every_s, stop, one_batch)),
            asyncio.create_task(every(opts.swap_every_s, stop, one_swap)),
        ]
        try:
            await asyncio.sleep(opts.warmup)
            quiet_start = await quiet_sample(traffic, sampler, http)
            await asyncio.sleep(max(0.0, opts.minutes * 60 - opts.warmup))
            stop.set()
            await asyncio.gather(*loops)
            quiet_end = await quiet_sample(traffic, sampler, http)
        finally:
            stop.set()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
    requests = sum(traffic.outcomes.values())
    elapsed = time.monotonic() - sampler.started
    return {
        "run": {
            "minutes": opts.minutes,
            "interval_s": opts.interval_s,
            "warmup_s": opts.warmup,
            "workers": opts.workers,
            "samples": len(sampler.samples),
            "requests": requests,
            "requests_per_s": requests / elapsed,
            "load": "loadavg "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
            + f" at the end, {os.cpu_count()} CPUs",
            **counts,
        },
        "series": series_figures(sampler.samples, opts.warmup),
        "quiet": quiet_figures(quiet_start, quiet_end),
        "maps": map_figures([*sampler.samples, quiet_start, quiet_end]),
        "outcomes": dict(traffic.outcomes),
        "samples": sampler.samples,
        "quiet_samples": [quiet_start, quiet_end],
    }


def run_soak(opts: SoakOptions) -> dict[str, Any]:
    """The whole soak: the stack up, the traffic, every process stopped after."""
    with tempfile.TemporaryDirectory(prefix="orchestra-soak-") as tmp, soak_stack(Path(tmp)) as st:
        return asyncio.run(soak(st, opts))


def write(report: dict[str, Any], out: Path, name: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


def _stop(signum: int, frame: object) -> None:
    """SIGTERM or SIGHUP (a CI timeout, a closed terminal): unwind like Ctrl-C, as `python -m
    bench` does, so the stack's `with` stops every process it started."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=None, help="seconds (default: a fifth)")
    p.add_argument("--workers", type=int, default=4, help="clients sending at once")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "issue31")
    p.add_argument("--name", default=None, help="file name (default soak-<minutes>min)")
    a = p.parse_args(argv)
    opts = SoakOptions(a.minutes, a.interval, a.warmup, a.workers)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    report = run_soak(opts)
    paths = write(report, a.out, a.name or f"soak-{a.minutes:g}min")
    print(markdown(report))
    print("written:", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
