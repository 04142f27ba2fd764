"""One gateway over two nodes' supervisors, across real network boundaries: each node is a
network namespace with its own supervisor and fake engines (bound off loopback, so they need
their --api-key), the gateway is in the root namespace. Skipped only where namespaces are
refused (not root, no iproute2 and no apt-get)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until
from tests.netns import Cluster, ensure_iproute2

from .cluster import (
    Load,
    NodeSupervisor,
    admin_status,
    completion,
    gateway_for,
    model,
    replica_urls,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    why = ensure_iproute2()
    if why is not None:
        pytest.skip(why)
    made = Cluster(2)
    try:
        yield made
    finally:
        made.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cli = [sys.executable, "-m", "orchestra.cli", *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(cli, capture_output=True, text=True, timeout=60, env=env, check=False)


def _fake_stats(url: str) -> dict[str, int]:
    by_path: dict[str, int] = httpx.get(url + "/fake/stats", timeout=5).json()["by_path"]
    return by_path


def test_model_on_both_nodes_is_balanced_and_engines_need_their_key(
    cluster: Cluster, tmp_path: Path
) -> None:
    n1, n2 = cluster.nodes
    sups = [NodeSupervisor(n, tmp_path, [model("shared", tmp_path, 8001)]) for n in (n1, n2)]
    for sup in sups:
        sup.start()
    urls = [sup.wait_ready("shared")["shared"]["upstreams"][0] for sup in sups]
    assert urls == [f"http://{n1.address}:8001", f"http://{n2.address}:8001"]
    # Off loopback the engine refuses requests without its key.
    body = {"model": "shared", "prompt": "x", "max_tokens": 1}
    assert httpx.post(urls[0] + "/v1/completions", json=body, timeout=5).status_code == 401
    with gateway_for(sups, ["shared"]) as gw:
        wait_until(lambda: sorted(replica_urls(gw, "shared")) == urls, 10)
        codes = [completion(gw.url, "shared").status_code for _ in range(20)]
        assert codes == [200] * 20
        served = [_fake_stats(u).get("/v1/completions", 0) for u in urls]
        assert sum(served) >= 20 and min(served) >= 5, served  # round-robin over both nodes
        # The CLI with the gateway's config: a table per node; actions need --node.
        config_path = str(gw.config_path)
        status = _cli("status", "--config", config_path)
        assert status.returncode == 0, status.stdout
        assert f"models on {n1.name}" in status.stdout and f"models on {n2.name}" in status.stdout
        ambiguous = _cli("restart", "shared", "--config", config_path)
        assert ambiguous.returncode == 1 and "pick one with --node" in ambiguous.stdout
        one = _cli("restart", "shared", "--config", config_path, "--node", n2.name)
        assert one.returncode == 0, one.stdout
    assert sups[1].wait_ready("shared")["shared"]["engines"][0]["restarts"] == 1


def test_cold_model_is_placed_on_the_node_with_room(cluster: Cluster, tmp_path: Path) -> None:
    n1, n2 = cluster.nodes
    servers = [model("shared", tmp_path, 8001)]
    pool = [model("extra", tmp_path, 8002)]
    full = NodeSupervisor(n1, tmp_path, servers, pool, max_resident=1).start()
    roomy = NodeSupervisor(n2, tmp_path, servers, pool, max_resident=2).start()
    for sup in (full, roomy):
        sup.wait_ready("shared")
    # `extra` is not in the gateway's config: learnt from the supervisors, routed, ensured.
    with gateway_for([full, roomy], ["shared"]) as gw:
        wait_until(lambda: admin_status(gw)["nodes"][n2.name]["has_room"], 10)
        assert completion(gw.url, "extra", timeout=30).status_code == 200
        assert replica_urls(gw, "extra") == [f"http://{n2.address}:8002"]
    assert roomy.models()["extra"]["state"] == "ready"
    assert full.models()["extra"]["state"] == "cold"
    assert full.models()["shared"]["state"] == "ready"  # nothing was evicted for it


def test_supervisor_sigkill_and_restart_adopts_engines_with_no_failed_request(
    cluster: Cluster, tmp_path: Path
) -> None:
    n1, n2 = cluster.nodes
    s1 = NodeSupervisor(
        n1, tmp_path, [model("shared", tmp_path, 8001), model("solo", tmp_path, 8003)],
        [model("later", tmp_path, 8004)],
    ).start()  # fmt: skip
    s2 = NodeSupervisor(n2, tmp_path, [model("shared", tmp_path, 8001)]).start()
    pids = {n: m["engines"][0]["pid"] for n, m in s1.wait_ready("shared", "solo").items()}
    s2.wait_ready("shared")
    with gateway_for([s1, s2], ["shared", "solo"], ["later"]) as gw:
        wait_until(lambda: len(replica_urls(gw, "shared")) == 2 and replica_urls(gw, "solo"), 10)
        with Load(gw.url, "shared", "solo") as load:
            wait_until(lambda: load.ok("solo") > 5, 10)
            s1.kill()  # SIGKILL: no chance to clean up; engines keep serving
            wait_until(lambda: admin_status(gw)["nodes"][n1.name]["away"], 10)
            during = load.ok("solo")
            # A model that needs an ensure cannot get one while its only node's supervisor is
            # away: 503 with Retry-After, not a hang.
            cold = completion(gw.url, "later")
            assert cold.status_code == 503 and "retry-after" in cold.headers
            wait_until(lambda: load.ok("solo") > during + 5, 10)  # still served meanwhile
            s1.start()
            table = s1.wait_ready("shared", "solo")
            wait_until(lambda: not admin_status(gw)["nodes"][n1.name]["away"], 10)
            after = load.ok("solo")
            wait_until(lambda: load.ok("solo") > after + 5, 10)
        assert load.failed() == 0, (load.statuses, load.errors[:3])
    assert {n: m["engines"][0]["pid"] for n, m in table.items() if n in pids} == pids
    assert "adopted engine solo" in s1.output()


def test_cut_link_takes_the_node_out_of_rotation_and_back(cluster: Cluster, tmp_path: Path) -> None:
    n1, n2 = cluster.nodes
    sups = [NodeSupervisor(n, tmp_path, [model("shared", tmp_path, 8001)]) for n in (n1, n2)]
    for sup in sups:
        sup.start().wait_ready("shared")
    both = sorted(f"http://{n.address}:8001" for n in (n1, n2))
    with gateway_for(sups, ["shared"]) as gw:
        wait_until(lambda: sorted(replica_urls(gw, "shared")) == both, 10)
        with Load(gw.url, "shared") as load:
            wait_until(lambda: load.ok("shared") > 5, 10)
            n1.cut()
            try:
                wait_until(lambda: replica_urls(gw, "shared") == [f"http://{n2.address}:8001"], 15)
                assert admin_status(gw)["nodes"][n1.name]["away"]
                during = load.ok("shared")
                wait_until(lambda: load.ok("shared") > during + 10, 10)  # the other node serves
            finally:
                n1.restore()
            wait_until(lambda: sorted(replica_urls(gw, "shared")) == both, 15)
            assert not admin_status(gw)["nodes"][n1.name]["away"]
        assert load.failed() == 0, (load.statuses, load.errors[:3])
    for sup in sups:
        sup.stop()
        assert sup.proc.returncode in (0, -signal.SIGTERM)
