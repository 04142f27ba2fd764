"""The real vLLM CPU engine on a second "machine" (a network namespace): its supervisor binds the
node's address, the engine gets a generated --api-key (real vLLM answers 401 without it), the
gateway in the root namespace sends the key; a SIGKILLed supervisor's successor adopts the live
engine (same pid) while requests keep being answered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ENGINE_PYTHON, MODEL_DIR, START_TIMEOUT_S, stack_config
from tests.integration.multinode.cluster import (
    Load,
    NodeSupervisor,
    admin_status,
    completion,
    gateway_for,
)
from tests.netns import Cluster, ensure_iproute2

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture
def node_cluster() -> Iterator[Cluster]:
    why = ensure_iproute2()
    if why is not None:
        pytest.skip(why)
    made = Cluster(1)
    try:
        yield made
    finally:
        made.close()


def test_real_engine_on_another_node_needs_its_key_and_is_adopted(
    node_cluster: Cluster, tmp_path: Path
) -> None:
    if not (ENGINE_PYTHON.exists() and (MODEL_DIR / "orchestra-model.json").exists()):
        pytest.fail("e2e needs the CPU engine and model: run `make model`")
    (node,) = node_cluster.nodes
    real = stack_config(tmp_path)
    hot = {**real["servers"][0], "port": 8001}
    sup = NodeSupervisor(node, tmp_path, [hot], max_resident=1)
    engine_env = {**real["engine"].get("env", {}), "VLLM_HOST_IP": node.address}
    sup.config["engine"] = {**real["engine"], "host": node.address, "env": engine_env}
    sup.start()
    try:
        table = sup.wait_ready(hot["name"], timeout=START_TIMEOUT_S)
        engine = table[hot["name"]]["engines"][0]
        url = engine["url"]
        assert url == f"http://{node.address}:8001"
        body = {"model": hot["name"], "prompt": "Hello", "max_tokens": 4}
        assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 401
        assert httpx.get(url + "/health", timeout=10).status_code == 200
        with gateway_for([sup], [hot["name"]], timeouts={"first_byte_s": 120.0}) as gw:
            wait_until(lambda: admin_status(gw)["models"][hot["name"]]["replicas"], 20)
            reply = completion(gw.url, hot["name"], timeout=120)
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["text"]
            with Load(gw.url, hot["name"]) as load:
                wait_until(lambda: load.ok(hot["name"]) >= 2, 120)
                sup.kill()
                sup.start()
                adopted = sup.wait_ready(hot["name"], timeout=60)[hot["name"]]["engines"][0]
                after = load.ok(hot["name"])
                wait_until(lambda: load.ok(hot["name"]) >= after + 2, 120)
            assert load.failed() == 0, (load.statuses, load.errors[:3])
        assert adopted["pid"] == engine["pid"]
        assert "adopted engine" in sup.output()
    finally:
        sup.stop()
