"""`python -m bench.multinode` (root; Linux network namespaces): multi-node figures.

Two "nodes" (network namespaces, each with a supervisor and fake engines) behind one gateway in
the root namespace, as in tests/integration/multinode. Prints and writes (`--out`, JSON):
- how long the gateway takes to take a node whose link is cut out of rotation, and to put it
  back once the link is restored (`gateway.node_down_after_s` = 1 s, sync every 0.2 s);
- requests failed while a node's supervisor is SIGKILLed and restarted, for a model only that
  node serves: `on_supervisor_exit: adopt` (engines adopted) vs `kill` (today's behaviour before
  adoption: the reaper kills the engines, the new supervisor starts them again);
- the latency a cross-namespace (veth) hop adds over loopback, client -> fake engine direct.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from orchestra.health import wait_healthy_sync
from tests.conftest import wait_until
from tests.fake_engine import FakeEngineProcess
from tests.integration.multinode.cluster import (
    Load,
    NodeSupervisor,
    admin_status,
    gateway_for,
    model,
    replica_urls,
)
from tests.netns import Cluster, ensure_iproute2


def rotation_times(cluster: Cluster, tmp: Path, rounds: int) -> dict[str, Any]:
    n1, n2 = cluster.nodes
    sups = [NodeSupervisor(n, tmp, [model("shared", tmp, 8001)]) for n in (n1, n2)]
    for sup in sups:
        sup.start().wait_ready("shared")
    out_s, back_s = [], []
    try:
        with gateway_for(sups, ["shared"]).start() as gw:
            wait_until(lambda: len(replica_urls(gw, "shared")) == 2, 10)
            for _ in range(rounds):
                began = time.perf_counter()
                n1.cut()
                wait_until(lambda: len(replica_urls(gw, "shared")) == 1, 20, 0.005)
                out_s.append(time.perf_counter() - began)
                began = time.perf_counter()
                n1.restore()
                wait_until(lambda: len(replica_urls(gw, "shared")) == 2, 20, 0.005)
                back_s.append(time.perf_counter() - began)
    finally:
        for sup in sups:
            sup.stop()
    return {
        "node_down_after_s": 1.0,
        "routing_refresh_s": 0.2,
        "out_of_rotation_s": [round(x, 3) for x in out_s],
        "back_in_rotation_s": [round(x, 3) for x in back_s],
    }


def restart_failures(cluster: Cluster, tmp: Path, mode: str) -> dict[str, Any]:
    n1, n2 = cluster.nodes
    s1 = NodeSupervisor(n1, tmp / mode, [model("solo", tmp, 8003)], on_supervisor_exit=mode).start()
    s2 = NodeSupervisor(n2, tmp / mode, [model("shared", tmp, 8001)]).start()
    s1.wait_ready("solo")
    s2.wait_ready("shared")
    try:
        with gateway_for([s1, s2], ["solo", "shared"]).start() as gw:
            wait_until(lambda: replica_urls(gw, "solo"), 10)
            with Load(gw.url, "solo") as load:
                wait_until(lambda: load.ok("solo") > 20, 10)
                began = time.perf_counter()
                s1.kill()
                s1.start()
                s1.wait_ready("solo")
                wait_until(lambda: not admin_status(gw)["nodes"][n1.name]["away"], 20)
                after = load.ok("solo")
                wait_until(lambda: load.ok("solo") > after + 20, 30)
                window = time.perf_counter() - began
            statuses = {f"{m} {c}": n for (m, c), n in load.statuses.items()}
    finally:
        s1.stop()
        s2.stop()
    return {
        "mode": mode,
        "requests": sum(load.statuses.values()) + len(load.errors),
        "failed": load.failed(),
        "statuses": statuses,
        "window_s": round(window, 2),
    }


def hop_latency(cluster: Cluster, tmp: Path, n: int) -> dict[str, Any]:
    node = cluster.nodes[0]
    body = {"model": "m", "prompt": "hi", "max_tokens": 1}
    out: dict[str, Any] = {"requests": n}
    remote_log = (tmp / "hop-engine.log").open("wb")
    argv = [sys.executable, "tests/fake_engine.py", "--host", node.address, "--port", "8009"]
    remote = node.popen(argv, remote_log, Path.cwd())
    try:
        with FakeEngineProcess("--served-model-name", "m") as local:
            remote_url = f"http://{node.address}:8009"
            wait_healthy_sync(remote_url, timeout_s=20, interval_s=0.02, probe_timeout_s=1)
            for label, url in (("loopback", local.url), ("veth", remote_url)):
                with httpx.Client(timeout=5) as client:
                    for _ in range(50):  # warm up the connection
                        client.post(url + "/v1/completions", json=body)
                    took = []
                    for _ in range(n):
                        began = time.perf_counter()
                        client.post(url + "/v1/completions", json=body)
                        took.append((time.perf_counter() - began) * 1000)
                took.sort()
                out[label] = {
                    "median_ms": round(statistics.median(took), 3),
                    "p99_ms": round(took[int(len(took) * 0.99) - 1], 3),
                }
    finally:
        remote.kill()
        remote.wait()
    out["added_median_ms"] = round(out["veth"]["median_ms"] - out["loopback"]["median_ms"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="link cuts to time")
    parser.add_argument("--requests", type=int, default=500, help="requests per latency leg")
    parser.add_argument("--out", type=Path, default=Path("bench/results/multinode.json"))
    args = parser.parse_args()
    why = ensure_iproute2()
    if why is not None:
        print(f"skipped: {why}")
        return 0
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="orchestra-multinode-") as tmp:
        for name, run in (
            ("rotation", lambda c, t: rotation_times(c, t, args.rounds)),
            ("restart_adopt", lambda c, t: restart_failures(c, t, "adopt")),
            ("restart_kill", lambda c, t: restart_failures(c, t, "kill")),
            ("hop_latency", lambda c, t: hop_latency(c, t, args.requests)),
        ):
            cluster = Cluster(2)
            try:
                work = Path(tmp) / name
                work.mkdir()
                results[name] = run(cluster, work)
            finally:
                cluster.close()
            print(name, json.dumps(results[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
