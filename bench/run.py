"""Orchestration: start a fake upstream and the gateway, then sweep concurrency, alternating
direct and gateway rounds (A B B A ...) so that machine noise and drift hit both legs alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cpu import cpu_seconds
from bench.load import RoundResult, chat_body, have_wrk, run_python_subprocess, run_wrk
from bench.stats import merge, ratios, summarize
from bench.supervisor_figures import SupervisorBenchOptions
from orchestra.health import NotAlive, wait_healthy_sync
from orchestra.lifetime import spawn, stop_group

REPO = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"


@dataclass
class BenchOptions:
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32, 64, 128, 256])
    duration_s: float = 4.0  # per point and leg, split over `rounds`
    rounds: int = 2
    modes: tuple[str, ...] = ("nonstream", "stream")
    base_url: str | None = None  # aim at this server instead of the fake (+ gateway)
    direct_url: str | None = None  # with base_url: the "direct" leg
    model: str = "bench"
    max_tokens: int = 16
    stream_max_tokens: int = 32
    token_rate: float = 200.0  # fake upstream, non-streaming (latency = ttft + tokens/rate)
    ttft_ms: float = 20.0
    stream_token_rate: float = 20.0  # fake upstream, streaming (inter-token gap = 1/rate)
    # Streams start spread over this many seconds (bench/load.py); None: one fake stream's
    # length against the fake upstream, 0 (all at once) against real servers.
    stream_stagger_s: float | None = None
    pin: bool = True
    use_wrk: bool = True
    swap: bool = False
    supervisor_url: str | None = None
    admin_token: str | None = None  # for --swap's control API calls
    gateway_url: str | None = None  # on-demand first request goes here (default base_url)
    model_path: str | None = None  # to evict/warm the page cache for cold-start figures
    out_dir: Path = REPO / "bench" / "results"
    py_spy: str | None = None  # record the gateway with py-spy into this SVG (fake mode only)
    gateway_rev: str | None = None  # run the gateway of this git revision (bench/ab.py's unpack)
    baseline_rev: str | None = None  # also a "baseline" leg: this revision's gateway, alternated
    extras: tuple[str, ...] = ()  # ceiling, affinity, prefix_engines (bench/ceiling, affinity)
    swap_open_duration_s: float = 40.0  # --swap-open: arrivals per policy (bench/swap_open.py)
    supervisor: SupervisorBenchOptions | None = None  # --supervisor: measure supervisor figures
    sweep: bool = True  # False with --supervisor-only


@dataclass
class Leg:
    name: str  # "direct" | "gateway"
    url: str  # base URL
    pgid: int | None = None  # a process group started here: its CPU per round is measured


def _post(url: str, payload: dict[str, Any] | None = None, timeout: float = 900.0) -> Any:
    data = json.dumps(payload or {}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def _pin(pid: int, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(pid, {cpu})
        except OSError:
            pass


def cpu_plan(pin: bool) -> dict[str, int | None]:
    """Gateway alone on one core; upstream + load generator on the other (2+ cores only)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pin or len(cpus) < 2:
        return {"gateway": None, "upstream": None, "load": None}
    return {"gateway": cpus[1], "upstream": cpus[0], "load": cpus[0]}


@contextmanager
def fake_upstream(opts: BenchOptions, cpu: int | None) -> Iterator[str]:
    sys.path.insert(0, str(REPO))
    from tests.fake_engine import FakeEngineProcess

    engine = FakeEngineProcess(
        "--served-model-name",
        opts.model,
        "--token-rate",
        str(opts.token_rate),
        "--ttft-ms",
        str(opts.ttft_ms),
        name=opts.model,
    )
    engine.start()
    assert engine.proc is not None
    _pin(engine.proc.pid, cpu)
    try:
        yield engine.url
    finally:
        engine.stop()


@contextmanager
def gateway_process(
    upstream: str,
    model: str,
    cpu: int | None,
    workers: int = 1,
    tree: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """A gateway in front of `upstream`, pinned to `cpu`: (its URL, its process group). `tree`:
    run the packages unpacked there (bench/ab.py) instead of the installed ones; `env`: more
    environment (`ORCHESTRA_*` overrides of its config)."""
    sys.path.insert(0, str(REPO))
    from tests.fake_engine import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(
            json.dumps(  # JSON is YAML
                {
                    "servers": [{"name": model, "url": upstream}],
                    "gateway": {"host": "127.0.0.1", "port": port, "workers": workers},
                    # a batch store is one process's; an older tree may not have the section
                    "batch": {"enabled": workers == 1 and tree is None},
                }
            )
        )
        log = open(Path(tmp) / "gateway.log", "w+b")
        proc = spawn(
            [sys.executable, "-m", "orchestra.gateway", "--config", str(cfg)],
            # a tree runs from a folder without an orchestra/ that could shadow it
            cwd=REPO if tree is None else tmp,
            env={
                **os.environ,
                **(env or {}),
                **({} if tree is None else {"PYTHONPATH": str(tree)}),
            },
            stdout=log,
        )
        _pin(proc.pid, cpu)
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_healthy(proc, url, 30.0, "gateway")
            except RuntimeError as exc:
                log.seek(0)
                raise RuntimeError(f"{exc}: {log.read()[-2000:]!r}") from None
            yield url, proc.pid
        finally:
            stop_group(proc, 10.0)
            log.close()


def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout_s: float, what: str) -> None:
    """Poll `url`/health until it answers 200; RuntimeError if `proc` exits or time runs out."""
    try:
        wait_healthy_sync(
            url,
            timeout_s=timeout_s,
            interval_s=0.05,
            probe_timeout_s=2.0,
            is_alive=lambda: proc.poll() is None,
        )
    except (NotAlive, TimeoutError) as exc:
        raise RuntimeError(f"{what} did not start ({exc})") from None


def _set_fake(upstream: str, token_rate: float, ttft_ms: float) -> None:
    _post(upstream + "/fake/config", {"token_rate": token_rate, "ttft_ms": ttft_ms}, 5)


def stream_stagger_s(opts: BenchOptions) -> float:
    if opts.stream_stagger_s is not None:
        return opts.stream_stagger_s
    if opts.base_url is not None:
        return 0.0
    return opts.ttft_ms / 1000 + opts.stream_max_tokens / opts.stream_token_rate


def run_round(
    opts: BenchOptions, mode: str, url: str, concurrency: int, seconds: float, cpu: int | None
) -> RoundResult:
    """One round of `seconds` of load; a stream round runs its stagger's ramp first, so its
    TTFT comes from `seconds` of the steady state (bench/load.py)."""
    stream = mode == "stream"
    body = chat_body(opts.model, opts.stream_max_tokens if stream else opts.max_tokens, stream)
    if not stream and opts.use_wrk and have_wrk():
        return run_wrk(url + CHAT, body, concurrency, seconds, cpu)
    stagger = stream_stagger_s(opts) if stream else 0.0
    return run_python_subprocess(
        url + CHAT, body, concurrency, seconds + stagger, stream, cpu, stagger_s=stagger
    )


Progress = Callable[[str], None]


def sweep(
    opts: BenchOptions,
    legs: list[Leg],
    cpus: dict[str, int | None],
    upstream: str | None,
    progress: Progress,
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    per_round = max(1.0, opts.duration_s / opts.rounds)
    for mode in opts.modes:
        if upstream is not None:
            rate = opts.stream_token_rate if mode == "stream" else opts.token_rate
            _set_fake(upstream, rate, opts.ttft_ms)
        rows = []
        for c in opts.concurrency:
            collected: dict[str, list[RoundResult]] = {leg.name: [] for leg in legs}
            used = {leg.name: 0.0 for leg in legs}
            for i in range(opts.rounds):
                order = legs if i % 2 == 0 else legs[::-1]  # A B, B A, ...
                for leg in order:
                    progress(f"{mode} c={c} {leg.name} round {i + 1}/{opts.rounds}")
                    before = 0.0 if leg.pgid is None else cpu_seconds(leg.pgid)
                    collected[leg.name].append(
                        run_round(opts, mode, leg.url, c, per_round, cpus["load"])
                    )
                    if leg.pgid is not None:
                        used[leg.name] += cpu_seconds(leg.pgid) - before
            row: dict[str, Any] = {"concurrency": c}
            for leg in legs:
                merged = merge(collected[leg.name])
                row[leg.name] = summarize(mode, merged)
                if leg.pgid is not None:
                    row[leg.name] |= cpu_cost(mode, used[leg.name], merged)
            if "direct" in row and "gateway" in row:
                row["ratios"] = ratios(mode, row["direct"], row["gateway"])
            if "direct" in row and "baseline" in row:
                row["baseline_ratios"] = ratios(mode, row["direct"], row["baseline"])
            rows.append(row)
        results[mode] = rows
    return results


def cpu_cost(mode: str, seconds: float, r: RoundResult) -> dict[str, Any]:
    """The leg's CPU (its process group, /proc) over its rounds, per request answered or per
    SSE data event relayed inside the windows. The rounds' ramp-up and the streams cut at the
    window's end are in the CPU but not in the counts: a slight overestimate, alike for every
    revision measured this way."""
    out: dict[str, Any] = {"cpu_s": round(seconds, 3)}
    if mode == "nonstream":
        out["cpu_us_per_request"] = round(1e6 * seconds / max(1, r.requests), 1)
    else:
        out["cpu_us_per_chunk"] = round(1e6 * seconds / max(1, r.chunks), 1)
        out["cpu_us_per_stream"] = round(1e6 * seconds / max(1, r.requests), 1)
    return out


def total_rounds(opts: BenchOptions, legs: int) -> int:
    return len(opts.modes) * len(opts.concurrency) * opts.rounds * legs


def method(opts: BenchOptions, cpus: dict[str, int | None]) -> dict[str, Any]:
    wrk = opts.use_wrk and have_wrk()
    return {
        "nonstream_load": "wrk -t1 (C, closed loop, keep-alive; latency quantiles from its HDR "
        "histogram)"
        if wrk
        else "python aiohttp closed loop (wrk not found)",
        "stream_load": "python aiohttp closed loop in its own process; TTFT = first SSE data "
        "event; ITL = per-stream mean gap between data events; chunks = data events per second",
        "alternation": f"{opts.rounds} rounds per point and leg in A-B-B-A order, merged",
        "window": "only requests completed inside each round's window count",
        "cpu_pinning": cpus,
        "upstream": "fake vLLM (tests/fake_engine.py)" if opts.base_url is None else opts.base_url,
        "nonstream_upstream_latency_ms": round(
            # a token rate of 0: the fake answers at once (tests/fake_engine.py)
            opts.ttft_ms
            + ((opts.max_tokens - 1) / opts.token_rate * 1000 if opts.token_rate else 0),
            1,
        )
        if opts.base_url is None
        else None,
        "stream_token_rate": opts.stream_token_rate if opts.base_url is None else None,
        "cores": os.cpu_count(),
    }
