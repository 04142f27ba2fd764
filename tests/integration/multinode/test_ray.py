"""Orchestra on a real two-node Ray cluster on this machine (`ray_nodes.py`): the head in the
root namespace, a worker in a network namespace, `orchestra ray up` putting one supervisor
actor on each, and a gateway whose config names no model and no supervisor — only `ray:`.

Under load, SIGKILL of the worker's raylet (node death as Ray sees it): the worker's engines
leave rotation within `LEAVE_S`, a model that also lives on the head fails no request, a cold
model that lived only on the worker is re-placed on the head. The worker rejoins (`ray start`
again: a new Ray node id): the reconciler gives it a supervisor, which adopts the engines still
alive there (same pids), and the gateway routes to them again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from orchestra.health import HEALTH_PATH, probe_sync, wait_healthy_sync
from tests.conftest import GatewayProcess, wait_until

from .cluster import Load, admin_status, completion, replica_urls
from .ray_nodes import TOKEN, RayNodes, gateway_config, up_config, wait_gateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Ray marks the node dead in ~2-3 s (HEALTH in ray_nodes.py), the gateway reads Ray every
# 0.2 s; the bound leaves room for a busy 2-core machine.
LEAVE_S = 10.0


def _control(url: str, path: str, method: str = "GET") -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    reply = httpx.request(method, url + path, headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _pids(url: str, model: str) -> set[int]:
    status = _control(url, f"/models/{model}")
    return {e["pid"] for e in status["engines"] if e.get("pid")}


def test_supervisors_follow_ray_nodes_death_and_rejoin(
    ray_cluster: RayNodes, tmp_path: Path
) -> None:
    nodes = ray_cluster
    config = up_config(tmp_path)
    path = tmp_path / "ray-up.yaml"
    path.write_text(yaml.safe_dump(config))
    up = nodes.orchestra("up", path)
    assert "2 started" in up.stdout, up.stdout
    port = config["supervisor"]["port"]
    head_url = f"http://{nodes.head_address}:{port}"
    worker_url = f"http://{nodes.worker.address}:{port}"

    with GatewayProcess(gateway_config(nodes), env=nodes.env).start(timeout=60) as gw:
        # Neither model is in the gateway's config: both are learnt from the supervisors.
        wait_gateway(gw, lambda: len(replica_urls(gw, "both")) == 2, 60, "both on two nodes")
        _control(worker_url, "/models/cold/ensure", "POST")
        wait_until(lambda: replica_urls(gw, "cold"), 30, 0.1, "cold on the worker")
        assert all(nodes.worker.address in u for u in replica_urls(gw, "cold"))
        worker_pids = _pids(worker_url, "both") | _pids(worker_url, "cold")
        assert completion(gw.url, "cold").status_code == 200
        # `orchestra status` with the gateway's config: one table per supervisor Ray knows.
        status = subprocess.run(
            [sys.executable, "-m", "orchestra.cli", "status", "--config", str(gw.config_path)],
            env={**nodes.env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        for address in (nodes.head_address, nodes.worker.address):
            assert f"models on ray-{address}" in status.stdout, status.stdout

        with Load(gw.url, "both") as load:
            wait_until(lambda: load.ok("both") >= 20, 30, 0.05, "load flowing")
            killed = time.monotonic()
            nodes.kill_worker_raylet()
            wait_until(
                lambda: (
                    replica_urls(gw, "both") == [_only(gw, "both", nodes.head_address)]
                    and not replica_urls(gw, "cold")
                ),
                LEAVE_S,
                0.05,
                "worker's engines out of rotation",
            )
            left_s = time.monotonic() - killed
            served_before = load.ok("both")
            wait_until(lambda: load.ok("both") >= served_before + 20, 30, 0.05, "load goes on")
        assert load.failed() == 0, (load.statuses, load.errors[:3])
        print(f"worker's engines left rotation {left_s:.2f} s after its raylet was killed")

        # The cold model, gone with the worker, is placed again on the survivor.
        assert completion(gw.url, "cold", timeout=60).status_code == 200
        assert all(nodes.head_address in u for u in replica_urls(gw, "cold"))

        # The node rejoins: a new supervisor adopts the engines that stayed alive.
        nodes.stop_worker()
        nodes.start_worker()
        # the supervisor is back on the worker
        wait_healthy_sync(worker_url, timeout_s=90, interval_s=0.2, probe_timeout_s=1)
        assert _pids(worker_url, "both") | _pids(worker_url, "cold") == worker_pids
        wait_until(lambda: len(replica_urls(gw, "both")) == 2, 30, 0.1, "worker back in rotation")
        assert completion(gw.url, "both").status_code == 200
        assert admin_status(gw)["models"]["both"]["state"] == "ready"
    down = nodes.orchestra("down", path)
    assert "stopped 2 supervisors" in down.stdout, down.stdout
    # neither answers any more (probe_sync says why not, so None is an answer)
    assert probe_sync(head_url + HEALTH_PATH, 1) and probe_sync(worker_url + HEALTH_PATH, 1)


def _only(gw: GatewayProcess, model: str, address: str) -> str | None:
    urls = [u for u in replica_urls(gw, model) if address in u]
    return urls[0] if urls else None
