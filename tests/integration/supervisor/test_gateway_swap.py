"""Gateway + supervisor + fake engines: swaps under load lose no request and send none to an
engine that is stopping.

Two models share one resident slot (max_resident 1), so every request for the cold one evicts
the other. Eviction drains first: the supervisor marks the victim draining, the gateway takes it
out of rotation and reports when its requests on it are done, and only then is it stopped. The
fake engines count, in their own logs, requests in flight when SIGTERM came and requests that
arrived after it: both must stay 0.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess, wait_until
from tests.fake_engine import free_port
from tests.integration.supervisor.helpers import SupervisorProcess, config_dict, server

pytestmark = pytest.mark.slow

LOAD_S = 12.0


def _stack_config(tmp: Path, refresh_s: float = 1.0) -> dict[str, Any]:
    config = config_dict(
        tmp,
        [server("a", tmp, "--startup-delay", "0.3", "--token-rate", "40")],
        pool=[server("b", tmp, "--startup-delay", "0.3", "--token-rate", "40")],
        supervisor={"max_resident": 1, "capacity_wait_s": 60, "drain_timeout_s": 30},
    )
    config["gateway"] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "routing_refresh_s": refresh_s,
        "timeouts": {"ensure_s": 60, "first_byte_s": 30},
    }
    return config


def _chat(gateway: GatewayProcess, model: str, stream: bool = False) -> tuple[int, str]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "stream": stream,
    }
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=120) as r:
        text = r.read().decode()
    if stream and r.status_code == 200 and ("[DONE]" not in text or '"error"' in text):
        return 599, text  # a stream cut or ended with an error event
    return r.status_code, text


def _engine_log_counts(log_dir: Path) -> dict[str, int]:
    """What the fake engines said about their stops: requests cut by a stop, and requests
    that reached an engine after its SIGTERM."""
    counts = {"stops": 0, "in_flight_at_stop": 0, "after_stop": 0}
    for log in log_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        for n in re.findall(r"stopping with (\d+) request\(s\) in flight", text):
            counts["stops"] += 1
            counts["in_flight_at_stop"] += int(n)
        counts["after_stop"] += sum(
            int(n) for n in re.findall(r"(\d+) arrived while stopping", text)
        )
    return counts


def test_steady_load_on_two_models_sharing_one_slot(tmp_path: Path) -> None:
    config = _stack_config(tmp_path)
    supervisor = SupervisorProcess(config, tmp_path).start()
    try:
        with GatewayProcess(config) as gateway:
            gateway.wait_ready("a", timeout=30)
            results: list[tuple[str, int, str]] = []
            lock = threading.Lock()
            deadline = time.monotonic() + LOAD_S

            def client(i: int) -> None:
                model = "ab"[i % 2]
                n = 0
                while time.monotonic() < deadline:
                    status, text = _chat(gateway, model, stream=n % 2 == 1)
                    with lock:
                        results.append((model, status, text[:200]))
                    n += 1

            with ThreadPoolExecutor(6) as pool:
                list(pool.map(client, range(6)))

            failed = [r for r in results if r[1] != 200]
            assert not failed, failed[:5]
            served = {m: sum(1 for r in results if r[0] == m) for m in "ab"}
            assert served["a"] > 0 and served["b"] > 0, served
            swaps = supervisor.metric("orchestra_supervisor_swaps_total")
            assert swaps >= 3, f"expected the models to swap under load, saw {swaps} swaps"
    finally:
        supervisor.stop()
    counts = _engine_log_counts(tmp_path / "logs")
    assert counts["stops"] >= 2, counts
    assert counts["in_flight_at_stop"] == 0 and counts["after_stop"] == 0, counts


def test_engine_killed_behind_the_gateways_back_is_restarted_and_counted(tmp_path: Path) -> None:
    """The safety net: an engine that vanished (SIGKILL) is ensured again by the request that
    found it gone, and the supervisor counts the crash restart it makes for that ensure."""
    config = _stack_config(tmp_path, refresh_s=60)  # the gateway will not notice by itself
    supervisor = SupervisorProcess(config, tmp_path).start()
    try:
        wait_until(lambda: supervisor.models()["a"]["state"] == "ready", timeout=30, what="a")
        with GatewayProcess(config) as gateway:
            gateway.wait_ready("a", timeout=30)
            assert _chat(gateway, "a")[0] == 200
            pid = supervisor.models()["a"]["engines"][0]["pid"]
            os.killpg(pid, signal.SIGKILL)

            status, text = _chat(gateway, "a")
            assert status == 200, text
            engine = supervisor.models()["a"]["engines"][0]
            assert engine["state"] == "ready" and engine["pid"] != pid
            assert engine["restarts"] == 1, engine
            assert "exited with code -9" in (engine["last_error"] or "")
            reensured = gateway.metric(
                "orchestra_upstream_retries_total", model="a", reason="reensure"
            )
            assert reensured == 1
    finally:
        supervisor.stop()
