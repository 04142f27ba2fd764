"""Supervisor figures (`python -m bench --supervisor`), all on this machine with the fake engine:

- ensure-to-served: a cold fake engine with a startup delay, through a real supervisor
  subprocess (its control API, with an admin token, through `orchestra.control.ControlClient`):
  ensure, then one chat completion on the upstream it returns. Compared with the same engine
  launched directly (spawned, /health polled every 2 ms, one chat): the difference is what the
  supervisor adds over the engine's own startup. Direct and supervised runs alternate.
- readiness detection: from the engine first answering /health (seen by a 2 ms poller) to the
  supervisor's ensure reply, at each `engine.health_poll_interval_s` asked for.
- page cache: reading a file evicted vs warm, and its residency before and after the read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from orchestra.control import ControlClient
from orchestra.health import NotAlive, wait_healthy_sync
from orchestra.supervisor.pagecache import evict_file, file_residency, preload_file

REPO = Path(__file__).resolve().parent.parent
MODEL = "cold"
WATCH_POLL_S = 0.002
CHUNK_BYTES = 16 << 20


@dataclass
class SupervisorBenchOptions:
    runs: int = 5  # ensure-to-served runs per poll interval (each also runs the direct leg)
    startup_s: float = 2.0  # the fake engine's startup delay
    poll_intervals: tuple[float, ...] = (0.1, 0.02)  # engine.health_poll_interval_s values
    page_cache_mb: int = 256
    scratch_dir: Path | None = None  # where the page-cache file goes (not tmpfs: it can't evict)
    action_timeout_s: float = 60.0  # ensure / unload through the control API
    chat_timeout_s: float = 30.0


class HealthWatcher(threading.Thread):
    """Polls `url`/health every 2 ms; records (monotonic) when it first answers 200."""

    def __init__(self, url: str, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.limit_s, self.first_ok = url, limit_s, 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(NotAlive, TimeoutError):  # `seen` reports it
            wait_healthy_sync(
                self.url,
                timeout_s=self.limit_s,
                interval_s=WATCH_POLL_S,
                probe_timeout_s=0.5,
                is_alive=lambda: not self.stopped.is_set(),
            )
            self.first_ok = time.monotonic()

    async def seen(self) -> float:
        await asyncio.to_thread(self.join, self.limit_s + 1)
        if not self.first_ok:
            raise RuntimeError(f"{self.url} never answered /health")
        return self.first_ok


async def _chat(session: aiohttp.ClientSession, url: str, timeout_s: float) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.post(url + "/v1/chat/completions", json=body, timeout=timeout) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"chat on {url} answered HTTP {r.status}")


async def _direct_served(session: aiohttp.ClientSession, opts: SupervisorBenchOptions) -> float:
    """The same engine launched by hand: spawn, /health polled every 2 ms, one chat served."""
    from tests.fake_engine import free_port
    from tests.integration.supervisor.helpers import FAKE_ENGINE

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    watcher = HealthWatcher(url, opts.startup_s + 30)
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, str(FAKE_ENGINE), MODEL, "--port", str(port)],
        *["--startup-delay", str(opts.startup_s)],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        watcher.start()
        await watcher.seen()
        await _chat(session, url, opts.chat_timeout_s)
        return time.monotonic() - began
    finally:
        watcher.stopped.set()
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def _supervised_served(
    session: aiohttp.ClientSession, control: ControlClient, port: int, opts: SupervisorBenchOptions
) -> tuple[float, float, float]:
    """ensure on a cold model, then one chat on the upstream it returns; then unload.
    Returns (ensure-to-served, readiness detection, ensure-to-engine-healthy) in seconds."""
    watcher = HealthWatcher(f"http://127.0.0.1:{port}", opts.action_timeout_s)
    watcher.start()
    began = time.monotonic()
    try:
        entry = await control.action(MODEL, "ensure", opts.action_timeout_s)
        ensured = time.monotonic()
        (url,) = entry["upstreams"]
        await _chat(session, url, opts.chat_timeout_s)
        served = time.monotonic() - began
        healthy = await watcher.seen()
    finally:
        watcher.stopped.set()
    await control.action(MODEL, "unload", opts.action_timeout_s)
    return served, ensured - healthy, healthy - began


async def _runs(url: str, token: str, port: int, opts: SupervisorBenchOptions) -> dict[str, Any]:
    directs: list[float] = []
    runs: list[tuple[float, float, float]] = []
    async with aiohttp.ClientSession() as session:
        control = ControlClient(url, token, session, timeout_s=opts.action_timeout_s)
        for _ in range(opts.runs):  # interleaved, so load drifts hit both legs alike
            directs.append(await _direct_served(session, opts))
            runs.append(await _supervised_served(session, control, port, opts))
    direct = statistics.median(directs)
    served = statistics.median(r[0] for r in runs)
    detection = [r[1] for r in runs]
    return {
        "runs": opts.runs,
        "direct_spawn_to_served_s": round(direct, 3),
        "ensure_to_served_s": round(served, 3),
        "supervisor_overhead_ms": round((served - direct) * 1000, 1),
        "ensure_to_engine_healthy_s": round(statistics.median(r[2] for r in runs), 3),
        "readiness_detection_ms_median": round(statistics.median(detection) * 1000, 1),
        "readiness_detection_ms_max": round(max(detection) * 1000, 1),
        "readiness_detection_ms": [round(d * 1000, 1) for d in detection],
        "direct_spawn_to_served_s_runs": [round(d, 3) for d in directs],  # the spread: noise
        "ensure_to_served_s_runs": [round(r[0], 3) for r in runs],
    }


def ensure_to_served(poll_s: float, opts: SupervisorBenchOptions) -> dict[str, Any]:
    """One supervisor subprocess (health poll `poll_s`) with one cold fake-engine model."""
    sys.path.insert(0, str(REPO))
    from tests.integration.supervisor.helpers import SupervisorProcess, config_dict, server

    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="bench-sup-") as tmp_name:
        tmp = Path(tmp_name)
        model = server(MODEL, tmp, "--startup-delay", str(opts.startup_s))
        cfg = config_dict(
            tmp,
            [],
            pool=[model],
            engine={"health_poll_interval_s": poll_s},
            supervisor={"admin_token": token},
        )
        sup = SupervisorProcess(cfg, tmp).start()
        try:
            out = asyncio.run(_runs(sup.url, token, model["port"], opts))
        finally:
            sup.stop()
    return {"health_poll_interval_s": poll_s} | out


def page_cache(opts: SupervisorBenchOptions) -> dict[str, Any]:
    """Write a file, evict it, time a sequential read; then time the same read warm."""
    with tempfile.TemporaryDirectory(prefix="bench-pagecache-", dir=opts.scratch_dir) as tmp:
        f = Path(tmp) / "weights.safetensors"
        block = os.urandom(1 << 20)
        with f.open("wb") as out:
            for _ in range(opts.page_cache_mb):
                out.write(block)
        evict_file(f)
        fraction_evicted = file_residency(f).fraction
        began = time.monotonic()
        preload_file(f, "read", CHUNK_BYTES)
        evicted_s = time.monotonic() - began
        fraction_after = file_residency(f).fraction
        began = time.monotonic()
        preload_file(f, "read", CHUNK_BYTES)
        warm_s = time.monotonic() - began
    return {
        "file_mb": opts.page_cache_mb,
        "fraction_evicted": round(fraction_evicted, 3),
        "fraction_after_preload": round(fraction_after, 3),
        "read_evicted_s": round(evicted_s, 4),
        "read_warm_s": round(warm_s, 4),
        "read_evicted_mb_per_s": round(opts.page_cache_mb / evicted_s, 1),
        "read_warm_mb_per_s": round(opts.page_cache_mb / warm_s, 1),
    }


def supervisor_figures(opts: SupervisorBenchOptions) -> dict[str, Any]:
    return {
        "ensure_to_served": {
            f"poll_{poll}s": ensure_to_served(poll, opts) for poll in opts.poll_intervals
        },
        "page_cache": page_cache(opts),
        "method": {
            "engine": f"fake vLLM (tests/fake_engine.py), --startup-delay {opts.startup_s} s",
            "direct": "spawned by hand, /health polled every 2 ms, then one chat",
            "supervised": "ensure through the control API (ControlClient, admin token), "
            "then one chat on the returned upstream; unload between runs",
            "readiness_detection": "ensure reply minus the engine's first 200 on /health "
            "(seen by a 2 ms poller)",
            "page_cache": "fsync + POSIX_FADV_DONTNEED, then sequential 16 MiB reads",
        },
    }
