"""Gateway + supervisor + fake engines: swaps under traffic lose no request.

With one engine resident, a request can be routed to an engine that a swap for the other model
is stopping. The gateway then asks the supervisor to make its model ready again and retries.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess, wait_until
from tests.fake_engine import free_port
from tests.integration.supervisor.helpers import SupervisorProcess, config_dict, server

pytestmark = pytest.mark.slow


def _stack_config(tmp: Path, refresh_s: float) -> dict[str, Any]:
    config = config_dict(
        tmp,
        [server("a", tmp, "--startup-delay", "0.5", "--token-rate", "20")],
        pool=[server("b", tmp, "--startup-delay", "0.5", "--token-rate", "20")],
        supervisor={"max_resident": 1, "capacity_wait_s": 30},
    )
    config["gateway"] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "routing_refresh_s": refresh_s,
        "timeouts": {"ensure_s": 30},
    }
    return config


def _chat(gateway: GatewayProcess, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=60)


def test_request_to_an_engine_evicted_behind_the_gateways_back_is_served(tmp_path: Path) -> None:
    # The gateway reads the model table once (refresh 60 s), so it still believes in `a`'s
    # upstream after the supervisor unloaded it.
    config = _stack_config(tmp_path, refresh_s=60)
    supervisor = SupervisorProcess(config, tmp_path).start()
    try:
        wait_until(lambda: supervisor.models()["a"]["state"] == "ready", timeout=20, what="a")
        with GatewayProcess(config) as gateway:
            gateway.wait_ready("a", timeout=20)
            assert _chat(gateway, "a").status_code == 200
            unloaded = httpx.post(supervisor.url + "/models/a/unload", timeout=30)
            assert unloaded.json()["state"] == "cold"

            reply = _chat(gateway, "a")
            assert reply.status_code == 200, reply.text
            assert supervisor.models()["a"]["state"] == "ready"
            assert (
                gateway.metric("orchestra_upstream_retries_total", model="a", reason="reensure")
                == 1
            )
    finally:
        supervisor.stop()


def test_concurrent_requests_for_two_models_sharing_one_slot_all_succeed(tmp_path: Path) -> None:
    config = _stack_config(tmp_path, refresh_s=1)
    supervisor = SupervisorProcess(config, tmp_path).start()
    try:
        with GatewayProcess(config) as gateway:
            gateway.wait_ready("a", timeout=20)
            with ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(lambda m: _chat(gateway, m), ["a", "b"] * 6))
            assert [r.status_code for r in replies] == [200] * 12, [r.text for r in replies]
    finally:
        supervisor.stop()
