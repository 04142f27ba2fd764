"""The gateway's ceiling: req/s at saturation against an upstream that answers at once.

Legs, alternated round by round (A B C, C B A, ...) so noise hits all alike:
- direct: wrk -> fake upstream;
- nginx: Debian's nginx (one worker, `proxy_pass` with upstream keepalive) pinned to the
  gateway's core;
- asgi_floor: the least an ASGI relay on the gateway's server costs (`bench/asgi_floor.py`),
  pinned to the same core;
- gateway: `python -m orchestra.gateway` with one worker, pinned to the same core.
Then `workers`: the gateway unpinned with 1 and with 2 workers (on a 2-core machine the load
generator and upstream share the cores, so expect little; a 16-core host scales ~linearly until
the upstream or the NIC is the limit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.asgi_floor import asgi_floor
from bench.cpu import cpu_seconds
from bench.load import RoundResult, chat_body, have_wrk, run_wrk
from bench.run import CHAT, BenchOptions, _set_fake, fake_upstream, gateway_process, wait_healthy
from orchestra.lifetime import spawn, stop_group

_NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  upstream up {{ server {upstream}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def ensure_nginx() -> str | None:
    """Debian's nginx (nginx-light), installed with apt-get when missing and we are root."""
    from tests.debian import apt_install

    found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if not found:
        os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
        apt_install("nginx-light", "nginx")
        found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    return found or None


@contextmanager
def nginx_proxy(binary: str, upstream: str, cpu: int | None) -> Iterator[tuple[str, int]]:
    """nginx in front of `upstream`, pinned to `cpu`: (its URL, its process group: the master
    and its worker)."""
    from tests.fake_engine import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        host = upstream.removeprefix("http://")
        conf.write_text(_NGINX_CONF.format(dir=tmp, upstream=host, port=port))
        cmd = [binary, "-c", str(conf), "-p", tmp]
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        proc = spawn(cmd, stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(proc, url, 10.0, f"nginx (its log: {Path(tmp) / 'error.log'})")
            yield url, proc.pid
        finally:
            stop_group(proc, 10.0)


def _rps(url: str, body: bytes, concurrency: int, seconds: float, cpu: int | None) -> float:
    result = run_wrk(url + CHAT, body, concurrency, seconds, cpu)
    return result.requests / (result.window_s or 1.0)


def alternate(
    legs: dict[str, str],
    one_round: Callable[[str], RoundResult],
    rounds: int,
    groups: dict[str, int] | None = None,
    count: Callable[[RoundResult], int] = lambda r: r.requests,
) -> tuple[dict[str, float], dict[str, float]]:
    """`one_round(url)` for every leg, `rounds` times in A B, B A order: the mean `count` per
    second per leg, and the CPU µs per `count` of the legs with a process group (`groups`)."""
    totals: dict[str, list[float]] = {name: [] for name in legs}
    groups = groups or {}
    used = dict.fromkeys(groups, 0.0)
    counted = dict.fromkeys(groups, 0)
    names = list(legs)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            before = cpu_seconds(groups[name]) if name in groups else 0.0
            result = one_round(legs[name])
            totals[name].append(count(result) / (result.window_s or 1.0))
            if name in groups:
                used[name] += cpu_seconds(groups[name]) - before
                counted[name] += count(result)
    rates = {name: round(sum(v) / len(v), 1) for name, v in totals.items()}
    cost = {name: round(1e6 * used[name] / max(1, counted[name]), 1) for name in groups}
    return rates, cost


def ceiling_figures(
    cpus: dict[str, int | None],
    concurrency: int = 64,
    seconds: float = 4.0,
    rounds: int = 2,
    tree: Path | None = None,  # the gateway's packages unpacked there (`--gateway-rev`)
    baseline: Path | None = None,  # also this tree's gateway, as `baseline` (`--baseline-rev`)
) -> dict[str, Any]:
    if not have_wrk():
        return {"skipped": "wrk not found"}
    opts = BenchOptions(model="bench")
    body = chat_body("bench", 1, False)
    out: dict[str, Any] = {"concurrency": concurrency, "seconds_per_round": seconds}
    with ExitStack() as stack:
        upstream = stack.enter_context(fake_upstream(opts, cpus["upstream"]))
        _set_fake(upstream, 0.0, 0.0)  # answers at once
        legs = {"direct": upstream}
        nginx = ensure_nginx()
        groups: dict[str, int] = {}
        if nginx:
            legs["nginx"], groups["nginx"] = stack.enter_context(
                nginx_proxy(nginx, upstream, cpus["gateway"])
            )
        legs["asgi_floor"], groups["asgi_floor"] = stack.enter_context(
            asgi_floor(upstream, cpus["gateway"])
        )
        legs["gateway"], groups["gateway"] = stack.enter_context(
            gateway_process(upstream, "bench", cpus["gateway"], tree=tree)
        )
        if baseline is not None:  # the same core as the gateway: one leg runs at a time
            legs["baseline"], groups["baseline"] = stack.enter_context(
                gateway_process(upstream, "bench", cpus["gateway"], tree=baseline)
            )
        for name in groups:
            _rps(legs[name], body, concurrency, 1, cpus["load"])  # warm the pools
        # CPU per request of every leg on the gateway's core: nginx and the ASGI floor are the
        # two references a revision of the gateway is read against (bench/asgi_floor.py)
        rps, cost = alternate(
            legs,
            lambda url: run_wrk(url + CHAT, body, concurrency, seconds, cpus["load"]),
            rounds,
            groups,
        )
        out["req_per_s_one_core"] = rps
        out["cpu_us_per_request"] = cost
        out["gateway_cpu_us_per_request"] = cost["gateway"]
        out["gateway_vs_asgi_floor_cpu"] = round(cost["gateway"] / max(0.1, cost["asgi_floor"]), 2)
        if baseline is not None:
            out["baseline_cpu_us_per_request"] = cost["baseline"]
            if "nginx" in rps:
                out["baseline_vs_nginx"] = round(rps["baseline"] / rps["nginx"], 3)
        out["gateway_vs_direct"] = round(rps["gateway"] / rps["direct"], 3)
        if "nginx" in rps:
            out["gateway_vs_nginx"] = round(rps["gateway"] / rps["nginx"], 3)
        with ExitStack() as gws:
            trees = {"": tree} | ({} if baseline is None else {"baseline ": baseline})
            pools: dict[str, tuple[str, int]] = {}
            for prefix, at in trees.items():
                for n in (1, 2):
                    pools[f"{prefix}{n}"] = gws.enter_context(
                        gateway_process(upstream, "bench", None, workers=n, tree=at)
                    )
            for url, _ in pools.values():
                _rps(url, body, concurrency, 1, None)
            workers, worker_cost = alternate(
                {name: url for name, (url, _) in pools.items()},
                lambda url: run_wrk(url + CHAT, body, concurrency, seconds, None),
                rounds,
                {name: pid for name, (_, pid) in pools.items()},
            )
        out["workers_req_per_s_unpinned"] = workers
        # all the workers' CPU (one process group) per request: equal to one worker's when
        # the second adds no per-request cost, so a total below 2x is the cores, not the code
        out["workers_cpu_us_per_request"] = worker_cost
        out["two_vs_one_worker"] = round(workers["2"] / workers["1"], 3)
        if baseline is not None:
            out["baseline_two_vs_one_worker"] = round(
                workers["baseline 2"] / workers["baseline 1"], 3
            )
    return out


if __name__ == "__main__":
    import json

    from bench.run import cpu_plan

    print(json.dumps(ceiling_figures(cpu_plan(True)), indent=2))
