"""The real vLLM CPU engine under a supervisor that Ray runs: a one-node Ray cluster (the head on
a veth address, off loopback, so the engine gets its --api-key), `orchestra ray up` with the
shipped CPU engine config, a gateway configured only with `ray:` serving a chat completion, and
`orchestra ray down` stopping the engine with its supervisor."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import GatewayProcess, fast_gateway_section, wait_until
from tests.e2e.conftest import ENGINE_PYTHON, MODEL_DIR, START_TIMEOUT_S, stack_config
from tests.fake_engine import free_port
from tests.integration.multinode.ray_nodes import RESOURCE, RayNodes, ray_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
TOKEN = "ray-e2e-admin-token"
NAMESPACE = "orchestra-e2e"


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[RayNodes]:
    with ray_nodes(tmp_path, worker=False) as nodes:
        yield nodes


def test_real_engine_under_a_ray_supervisor(ray_head: RayNodes, tmp_path: Path) -> None:
    if not (ENGINE_PYTHON.exists() and (MODEL_DIR / "orchestra-model.json").exists()):
        pytest.fail("e2e needs the CPU engine and model: run `make model`")
    real = stack_config(tmp_path)
    hot = real["servers"][0]
    engine = {**real["engine"], "env": {**real["engine"].get("env", {})}}
    engine["env"]["VLLM_HOST_IP"] = ray_head.head_address
    config = {
        "servers": [hot],
        "supervisor": {**real["supervisor"], "admin_token": TOKEN},
        "engine": engine,
        "rotation": {"enabled": False},
        "preload": {"enabled": False, "interval_s": 3600},
        "ray": {"namespace": NAMESPACE, "node_resource": RESOURCE},
    }
    path = tmp_path / "ray-up.yaml"
    path.write_text(yaml.safe_dump(config))
    up = ray_head.orchestra("up", path)
    assert "1 started" in up.stdout, up.stdout

    gw_config = {
        "ray": {"address": ray_head.address, "namespace": NAMESPACE, "admin_token": TOKEN},
        "gateway": fast_gateway_section(
            free_port(), routing_refresh_s=0.5, timeouts={"first_byte_s": 120.0}
        ),
    }
    with GatewayProcess(gw_config, env=ray_head.env).start(timeout=60) as gw:

        def replicas() -> list[str]:
            status = httpx.get(gw.url + "/admin/status", timeout=5).json()
            model = status["models"].get(hot["name"])
            return [r["url"] for r in model["replicas"]] if model else []

        (url,) = wait_until(replicas, START_TIMEOUT_S, 1.0, "the real engine ready")
        assert url.startswith(f"http://{ray_head.head_address}:")
        body = {
            "model": hot["name"],
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
        }
        reply = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=180)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"]
    pids = _engine_pids(tmp_path)
    assert pids, "no engine record"
    down = ray_head.orchestra("down", path)
    assert "stopped 1 supervisors" in down.stdout, down.stdout
    wait_until(lambda: not any(_alive(p) for p in pids), 30, 0.2, "engine stopped")


def _engine_pids(tmp: Path) -> list[int]:
    """The engine groups the supervisor recorded (`state_dir/<address>/engines/<pgid>.json`)."""
    return [int(p.stem) for p in tmp.glob("run/*/engines/*.json")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
