"""Open-loop swap figures (`python -m bench --swap-open`): three models share one slot
(`max_resident: 1`), requests arrive as independent Poisson streams at skewed rates, through a
real gateway and supervisor onto fake engines with a start and a wake that take time. Two
policies, one run each, same seed (so the same arrival times): `old` = `swap_quantum_s: 0` (a
waiting model evicts the resident at once, the policy before the swap scheduler) against `new`
= the swap scheduler with its defaults (orchestra/config/supervisor.py).

Per policy: swaps per 100 requests (the supervisor's `orchestra_supervisor_swaps_total`),
throughput (answered requests over the time from the first arrival to the last answer), and per
model the wait of each request (arrival to the end of its answer, so it includes the ~0.2 s the
engine takes to answer) at p50/p99/max, with the non-200 answers counted. Open loop: arrivals do
not wait for answers; a request still unanswered `drain_s` after the last arrival counts as
failed. Before the arrivals, each model is swapped in twice (measured start and wake), so both
policies start from the steady state rather than from three cold starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.stats import percentile
from orchestra.config import parse_config
from orchestra.health import wait_healthy_sync
from orchestra.lifetime import spawn, stop_group
from tests.conftest import scrape_total


@dataclass
class SwapOpenOptions:
    duration_s: float = 40.0  # arrivals per policy
    rate: float = 3.0  # requests/s over all models
    shares: tuple[float, ...] = (0.6, 0.3, 0.1)
    start_s: float = 4.0  # the fake engine's cold start (a real one: ~1-2 min here)
    wake_s: float = 1.0  # its wake from sleep
    sleep_s: float = 0.3
    token_rate: float = 40.0  # 8 tokens: ~0.2 s an answer
    drain_s: float = 90.0
    seed: int = 7
    policies: dict[str, dict[str, float]] = field(
        default_factory=lambda: {"old": {"swap_quantum_s": 0.0}, "new": {}}
    )


def _arrivals(opts: SwapOpenOptions, names: list[str]) -> list[tuple[float, str]]:
    """Merged Poisson streams: (seconds from the start, model), sorted."""
    rng = random.Random(opts.seed)
    out: list[tuple[float, str]] = []
    for name, share in zip(names, opts.shares, strict=True):
        t = rng.expovariate(opts.rate * share)
        while t < opts.duration_s:
            out.append((t, name))
            t += rng.expovariate(opts.rate * share)
    return sorted(out)


def _config(tmp: Path, opts: SwapOpenOptions, overrides: dict[str, float]) -> dict[str, Any]:
    from tests.fake_engine import free_port
    from tests.integration.supervisor.helpers import config_dict, server

    fake = ["--startup-delay", str(opts.start_s), "--wake-delay", str(opts.wake_s)]
    fake += ["--sleep-delay", str(opts.sleep_s), "--token-rate", str(opts.token_rate)]
    names = ["m60", "m30", "m10"]
    servers = [server(n, tmp, *fake, sleep_mode=True) for n in names]
    config = config_dict(
        tmp,
        servers[:1],
        pool=servers[1:],
        supervisor={
            "max_resident": 1,
            "on_supervisor_exit": "kill",
            "drain_timeout_s": 30,
            "capacity_wait_s": 120,
            **overrides,
        },
    )
    config["engine"]["startup_timeout_s"] = 60
    config["gateway"] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "routing_refresh_s": 1.0,
        "timeouts": {"ensure_s": 180, "first_byte_s": 60},
    }
    return config


@contextlib.contextmanager
def _stack(config: dict[str, Any], tmp: Path) -> Iterator[tuple[str, str]]:
    """A supervisor and a gateway, both from `config`; stopped (group, then SIGKILL) after."""
    from tests.conftest import GatewayProcess

    path = tmp / "stack.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "orchestra.supervisor", "--config", str(path)]
    with (tmp / "supervisor.log").open("wb") as out:
        supervisor = spawn(argv, stdout=out, cwd=Path(__file__).resolve().parent.parent)
    sup_url = f"http://127.0.0.1:{config['supervisor']['port']}"
    try:
        wait_healthy_sync(sup_url, timeout_s=30, interval_s=0.1, probe_timeout_s=2)
        _wait(lambda: _state(sup_url, "m60") == "ready", 60, "the first model")
        with GatewayProcess(config) as gateway:
            gateway.wait_ready("m60", timeout=60)
            yield gateway.url, sup_url
    finally:
        stop_group(supervisor, 40.0)  # it stops its engines on SIGTERM


def _state(sup_url: str, name: str) -> str | None:
    try:
        models = httpx.get(sup_url + "/models", timeout=5).json()["models"]
    except (httpx.HTTPError, ValueError):
        return None
    return next((m["state"] for m in models if m["name"] == name), None)


def _wait(check: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not up after {limit_s:g}s")
        time.sleep(0.1)


def _warm_up(sup_url: str, order: list[str]) -> None:
    """Swap each model in twice (a start, then a wake), so both policies begin in the steady
    state: every model has been started once, measured and put to sleep."""
    for name in order:
        r = httpx.post(f"{sup_url}/models/{name}/ensure", timeout=180)
        r.raise_for_status()


def _swaps(sup_url: str) -> float:
    return scrape_total(sup_url, "orchestra_supervisor_swaps_total", timeout=5)


async def _drive(
    gw_url: str, arrivals: list[tuple[float, str]], drain_s: float
) -> tuple[list[tuple[str, float, int]], float]:
    """Send each request at its arrival time; (model, wait s, status) each, and the span."""
    results: list[tuple[str, float, int]] = []
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=drain_s + 60, limits=limits) as client:

        async def one(at: float, model: str, began: float) -> None:
            body: dict[str, Any] = {"model": model, "max_tokens": 8}
            body["messages"] = [{"role": "user", "content": "hi"}]
            sent = began + at
            try:
                r = await client.post(gw_url + "/v1/chat/completions", json=body)
                status = r.status_code
            except httpx.HTTPError:
                status = 599
            results.append((model, time.monotonic() - sent, status))

        began = time.monotonic()
        tasks = []
        for at, model in arrivals:
            delay = began + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at, model, began)))
        _, pending = await asyncio.wait(tasks, timeout=drain_s)
        for task in pending:
            task.cancel()
        results += [("?", float("nan"), 598)] * len(pending)  # unanswered within drain_s
        span = time.monotonic() - began
    return results, span


def _figures(results: list[tuple[str, float, int]], span: float, swaps: float) -> dict[str, Any]:
    ok = [r for r in results if r[2] == 200]
    out: dict[str, Any] = {
        "requests": len(results),
        "answered": len(ok),
        "failed": len(results) - len(ok),
        "swaps": swaps,
        "swaps_per_100_requests": round(100 * swaps / max(1, len(results)), 1),
        "throughput_rps": round(len(ok) / span, 3) if span > 0 else None,
        "per_model": {},
    }
    for model in sorted({r[0] for r in results if r[0] != "?"}):
        waits = [r[1] for r in ok if r[0] == model]
        out["per_model"][model] = {
            "requests": sum(1 for r in results if r[0] == model),
            "failed": sum(1 for r in results if r[0] == model and r[2] != 200),
            "wait_p50_s": _round(percentile(waits, 50)),
            "wait_p99_s": _round(percentile(waits, 99)),
            "wait_max_s": _round(max(waits) if waits else None),
        }
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def swap_open_figures(opts: SwapOpenOptions | None = None) -> dict[str, Any]:
    """Both policies, one after the other, on the same arrival times."""
    opts = opts or SwapOpenOptions()
    arrivals = _arrivals(opts, ["m60", "m30", "m10"])
    report: dict[str, Any] = {
        "setup": {
            "models": {"m60": opts.shares[0], "m30": opts.shares[1], "m10": opts.shares[2]},
            "rate_rps": opts.rate,
            "duration_s": opts.duration_s,
            "fake_engine": {
                "start_s": opts.start_s,
                "wake_s": opts.wake_s,
                "sleep_s": opts.sleep_s,
            },
            "max_resident": 1,
            "seed": opts.seed,
        }
    }
    for policy, overrides in opts.policies.items():
        with tempfile.TemporaryDirectory(prefix=f"swap-open-{policy}-") as tmp:
            config = _config(Path(tmp), opts, overrides)
            sup = parse_config(config).supervisor
            report["setup"][f"{policy}_supervisor"] = {
                "swap_quantum_s": sup.swap_quantum_s,
                "swap_max_wait_s": sup.swap_max_wait_s,
            }
            with _stack(config, Path(tmp)) as (gw_url, sup_url):
                _warm_up(sup_url, ["m30", "m10", "m60"] * 2)
                before = _swaps(sup_url)
                results, span = asyncio.run(_drive(gw_url, arrivals, opts.drain_s))
                report[policy] = _figures(results, span, _swaps(sup_url) - before)
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.swap_open [--duration S]`: the figures alone, as JSON on stdout."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m bench.swap_open")
    p.add_argument("--duration", type=float, default=SwapOpenOptions().duration_s)
    p.add_argument("--rate", type=float, default=SwapOpenOptions().rate)
    a = p.parse_args(argv)
    figures = swap_open_figures(SwapOpenOptions(duration_s=a.duration, rate=a.rate))
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
