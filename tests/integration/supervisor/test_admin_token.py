"""With `supervisor.admin_token` set, every client of the control API sends it: the gateway
(sync, ensure), the CLI and `orchestra up` share one client. Without the token: 401."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.fake_engine import free_port
from tests.integration.supervisor.helpers import SupervisorProcess, config_dict, server

pytestmark = pytest.mark.slow

TOKEN = "s3cret-admin-token"


def test_gateway_and_cli_work_against_a_supervisor_that_requires_its_token(
    tmp_path: Path,
) -> None:
    config = config_dict(
        tmp_path,
        [server("hot", tmp_path)],
        pool=[server("cold", tmp_path)],
        supervisor={"admin_token": TOKEN},
    )
    config["gateway"] = {"host": "127.0.0.1", "port": free_port(), "routing_refresh_s": 0.2}
    supervisor = SupervisorProcess(config, tmp_path).start()
    try:
        refused = httpx.get(supervisor.url + "/models", timeout=5)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_admin_token"
        with GatewayProcess(config) as gateway:
            gateway.wait_ready("hot", timeout=20)  # learned from the token-guarded sync
            body = {"model": "cold", "messages": [{"role": "user", "content": "hi"}]}
            reply = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
            assert reply.status_code == 200, reply.text  # the ensure carried the token too
            assert gateway.health()["models"] == {"hot": "ready", "cold": "ready"}

        status = subprocess.run(
            [sys.executable, "-m", "orchestra.cli", "status", "--config", str(supervisor.path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert "hot" in status.stdout and "cold" in status.stdout
        anonymous = subprocess.run(
            [sys.executable, "-m", "orchestra.cli", "status", "--url", supervisor.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,  # no config here: no token
        )
        assert anonymous.returncode == 1 and "HTTP 401" in anonymous.stdout
    finally:
        supervisor.stop()
