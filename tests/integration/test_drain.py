"""Graceful drain: on SIGTERM the gateway stops accepting, finishes in-flight streams up to
`drain_timeout_s`, then exits; past the deadline the stream is cut and the upstream released.
With `orchestra up`, Ctrl-C stops the gateway first, then the supervisor and its engines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.conftest import REPO_ROOT, GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(90)
BODY = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


@pytest.fixture
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess("--token-rate", "10", name="m") as e:
        yield e


def _gateway(engine: FakeEngineProcess, drain_s: int) -> GatewayProcess:
    config = {
        "servers": [{"name": "m", "url": engine.url}],
        "gateway": fast_gateway_section(free_port(), drain_timeout_s=drain_s),
    }
    return GatewayProcess(config).start()


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=0.5)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_sigterm_finishes_streams_then_exits(engine: FakeEngineProcess) -> None:
    gateway = _gateway(engine, drain_s=10)
    assert gateway.proc is not None
    try:
        text = ""
        with httpx.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            json={**BODY, "max_tokens": 15},
            timeout=20,
        ) as reply:
            chunks = reply.iter_text()
            text += next(chunks)
            os.kill(gateway.proc.pid, signal.SIGTERM)
            wait_until(lambda: _refused(gateway.url), timeout=3, what="new connections refused")
            for chunk in chunks:
                text += chunk
        assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown
        assert gateway.proc.wait(10) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in gateway.output()
    finally:
        gateway.stop()


def test_drain_deadline_cuts_and_releases(engine: FakeEngineProcess) -> None:
    gateway = _gateway(engine, drain_s=1)
    assert gateway.proc is not None
    try:
        with httpx.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            json={**BODY, "max_tokens": 100},
            timeout=20,
        ) as reply:
            chunks = reply.iter_text()
            next(chunks)
            started = time.monotonic()
            os.kill(gateway.proc.pid, signal.SIGTERM)
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in chunks:
                    pass
        assert time.monotonic() - started < 4.0  # the deadline (1 s) plus shutdown
        gateway.proc.wait(5)
        wait_until(lambda: engine.stats()["active"] == 0, timeout=5, what="upstream released")
    finally:
        gateway.stop()


def test_up_stops_gateway_before_engines(tmp_path: Path) -> None:
    """`orchestra up`: SIGINT drains the gateway (the stream completes), then the supervisor
    stops its engines; afterwards no process of the tree is left."""
    pytest.importorskip("orchestra.up", reason="orchestra/up.py (supervisor author's) not there")
    gw_port = free_port()
    config = {
        "servers": [{"name": "m", "model": "fake"}],
        "engine": {
            "command": [sys.executable, str(REPO_ROOT / "tests" / "fake_engine.py")],
            "extra_args": ["--token-rate", "10"],
            "first_port": free_port(),
            "log_dir": str(tmp_path / "logs"),
            "startup_timeout_s": 30,
        },
        "supervisor": {"port": free_port(), "state_dir": str(tmp_path / "run"), "gpus": []},
        "gateway": fast_gateway_section(gw_port, drain_timeout_s=10),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    up = subprocess.Popen(
        [sys.executable, "-m", "orchestra.cli", "up", "--config", str(path)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{gw_port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(url + "/health", timeout=1).json()["models"]["m"] == "ready"
            except (httpx.HTTPError, KeyError, ValueError):
                return False

        wait_until(ready, timeout=60, interval=0.2, what="orchestra up ready")
        tree = [up, *psutil.Process(up.pid).children(recursive=True)]
        text = ""
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json={**BODY, "max_tokens": 15}, timeout=30
        ) as reply:
            chunks = reply.iter_text()
            text += next(chunks)
            os.kill(up.pid, signal.SIGINT)
            for chunk in chunks:
                text += chunk
        assert text.rstrip().endswith("data: [DONE]"), "engine stopped before the gateway drained"
        up.wait(30)
        pids = [p.pid for p in tree]
        wait_until(
            lambda: (
                not any(
                    psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
                )
            ),
            timeout=15,
            what="no orphan processes",
        )
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
