"""`python -m bench.fleet`: what a big fleet costs the gateway's control plane.

N fake supervisors (one aiohttp server per loopback port, all in a child process of this one, so
their CPU is not the gateway's) each report 4 models; one gateway (1 worker) lists them under
`supervisors:` and syncs each every `gateway.routing_refresh_s` (1 s, the default). For each N
(8, 32, 128 by default) it measures:
- the gateway's CPU seconds per second (utime+stime from /proc over a quiet window);
- the sync period the fakes see per node (configured 1 s: how late the rounds run);
- change-to-route latency: a supervisor's table changes (one more engine for one model) and the
  gateway's `/admin/status` is polled until it routes to it (the staleness a client sees).
`--layout shared`: every node serves the same 4 models (N replicas each); `distinct`: each node
its own 4 (4 N routes). Writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from tests.conftest import GatewayProcess, wait_until

_TICK = os.sysconf("SC_CLK_TCK")


def _table(node: int, layout: str, extra: bool) -> dict[str, Any]:
    models = []
    for m in range(4):
        name = f"m{m}" if layout == "shared" else f"n{node}-m{m}"
        ups = [f"http://127.0.0.2:{10000 + node}/{name}"]
        if extra and m == 0:
            ups.append(f"http://127.0.0.3:{10000 + node}/{name}")
        models.append({"name": name, "state": "ready", "upstreams": ups})
    return {"models": models, "node": {"resident": 4, "gpus": 0, "free_slots": 0}}


def _serve(n: int, layout: str, conn: Any) -> None:
    """The fake supervisors (child process), each on a port the kernel picks (sent back once
    all listen). Commands over `conn`: 'extra'/'plain' flip node 0's table; 'periods' returns
    the sync intervals seen."""
    extra = {"on": False}
    last: dict[int, float] = {}
    periods: list[float] = []

    def handler(node: int) -> Any:
        async def sync(request: web.Request) -> web.Response:
            await request.read()
            now = time.monotonic()
            if node in last:
                periods.append(now - last[node])
            last[node] = now
            return web.json_response(_table(node, layout, extra["on"] and node == 0))

        return sync

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def main() -> None:
        ports = []
        for node in range(n):
            app = web.Application()
            app.router.add_post("/gateways/{gid}/sync", handler(node))
            app.router.add_get("/health", health)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            ports.append(runner.addresses[0][1])
        conn.send(ports)
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "stop":
                return
            if command == "periods":
                conn.send(list(periods))
                periods.clear()
            else:
                extra["on"] = command == "extra"
                conn.send("ok")

    asyncio.run(main())


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def measure(n: int, layout: str, window_s: float, changes: int) -> dict[str, Any]:
    parent, child = mp.Pipe()
    fakes = mp.Process(target=_serve, args=(n, layout, child), daemon=True)
    fakes.start()
    try:
        assert parent.poll(60), "fake supervisors did not start"
        ports: list[int] = parent.recv()
        sups = [
            {"name": f"s{i}", "url": f"http://127.0.0.1:{p}", "admin_token": "t"}
            for i, p in enumerate(ports)
        ]
        gw_config = {"supervisors": sups, "gateway": {"workers": 1, "routing_refresh_s": 1.0}}
        with GatewayProcess(gw_config).start(timeout=60) as gw:
            assert gw.proc is not None
            first = "m0" if layout == "shared" else "n0-m0"
            wait_until(lambda: _replicas(gw, first), 30, 0.1, "first sync")
            time.sleep(2 * 1.0)  # every node synced at least once more
            parent.send("periods")
            parent.recv()
            cpu0, t0 = _cpu_s(gw.proc.pid), time.monotonic()
            time.sleep(window_s)
            cpu = (_cpu_s(gw.proc.pid) - cpu0) / (time.monotonic() - t0)
            parent.send("periods")
            periods = sorted(parent.recv())
            lags = []
            base = len(_replicas(gw, first))  # node 0's engine, and the others' (shared)
            for i in range(changes):
                want = base + 1 if i % 2 == 0 else base
                parent.send("extra" if want > base else "plain")
                parent.recv()
                began = time.monotonic()
                wait_until(lambda w=want: len(_replicas(gw, first)) == w, 30, 0.01, "change seen")
                lags.append(time.monotonic() - began)
    finally:
        parent.send("stop")
        fakes.join(10)
        if fakes.is_alive():
            fakes.kill()
    return {
        "supervisors": n,
        "models_per_supervisor": 4,
        "layout": layout,
        "gateway_cpu_s_per_s": round(cpu, 4),
        "sync_period_mean_s": round(statistics.mean(periods), 3) if periods else None,
        "sync_period_p99_s": round(periods[int(0.99 * (len(periods) - 1))], 3) if periods else None,
        "change_to_route_mean_s": round(statistics.mean(lags), 3),
        "change_to_route_max_s": round(max(lags), 3),
    }


def _replicas(gw: GatewayProcess, name: str) -> list[str]:
    status = httpx.get(gw.url + "/admin/status", timeout=30).json()
    model = status["models"].get(name)
    return [r["url"] for r in model["replicas"]] if model else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--layout", choices=["shared", "distinct"], default="shared")
    parser.add_argument("--window-s", type=float, default=10.0, help="CPU measured this long")
    parser.add_argument("--changes", type=int, default=6, help="table changes timed per size")
    parser.add_argument("--out", type=Path, default=Path("bench/results/fleet.json"))
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        results.append(measure(n, args.layout, args.window_s, args.changes))
        print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
