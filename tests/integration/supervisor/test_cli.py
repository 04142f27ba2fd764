"""The operator's tools against a real supervisor: `orchestra status|load|unload|logs`, the
`start_hot_models.sh` script, and `orchestra up` (supervisor + gateway, stopped by SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fake_engine import free_port

from .helpers import REPO_ROOT, SupervisorProcess, config_dict, server, wait_groups_empty

ORCHESTRA = [sys.executable, "-m", "orchestra.cli"]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*ORCHESTRA, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.slow
def test_status_load_unload_logs(tmp_path: Path) -> None:
    cfg = config_dict(tmp_path, [server("alpha", tmp_path)], pool=[server("beta", tmp_path)])
    sup = SupervisorProcess(cfg, tmp_path).start()
    cfg_path = str(sup.path)
    try:
        out = _cli("load", "beta", "--config", cfg_path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "beta" in out.stdout and "ready" in out.stdout
        status = _cli("status", "--config", cfg_path)
        assert status.returncode == 0
        assert "alpha" in status.stdout and "beta" in status.stdout
        logs = _cli("logs", "beta", "-n", "5", "--config", cfg_path)
        assert "listening" in logs.stdout
        out = _cli("unload", "beta", "--url", sup.url)
        assert out.returncode == 0 and "cold" in out.stdout
        missing = _cli("load", "nope", "--url", sup.url)
        assert missing.returncode == 1 and "404" in missing.stdout
    finally:
        sup.stop()


@pytest.mark.slow
def test_start_hot_models_script_loads_through_a_running_supervisor(tmp_path: Path) -> None:
    cfg = config_dict(tmp_path, [server("alpha", tmp_path)], supervisor={"start_hot": False})
    sup = SupervisorProcess(cfg, tmp_path).start()
    try:
        assert sup.models()["alpha"]["state"] == "cold"
        script = REPO_ROOT / "scripts" / "start_hot_models.sh"
        out = subprocess.run(
            ["bash", str(script), str(sup.path)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert sup.models()["alpha"]["state"] == "ready"
    finally:
        sup.stop()


@pytest.mark.slow
def test_up_starts_supervisor_then_gateway_and_stops_both(tmp_path: Path) -> None:
    cfg = config_dict(
        tmp_path,
        [server("alpha", tmp_path)],
        gateway={"port": free_port(), "drain_timeout_s": 1},
    )
    path = tmp_path / "up.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = (tmp_path / "up.out").open("w+")
    up = subprocess.Popen(
        [*ORCHESTRA, "up", "--config", str(path)],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{cfg['gateway']['port']}/v1"
    try:
        deadline = time.monotonic() + 60
        while "Orchestra is up" not in (tmp_path / "up.out").read_text():
            assert up.poll() is None, (tmp_path / "up.out").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.out").read_text()
            time.sleep(0.1)
        sup_url = f"http://127.0.0.1:{cfg['supervisor']['port']}"
        engine_pid = httpx.get(sup_url + "/models").json()["models"][0]["engines"][0]["pid"]
        chat = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(base + "/chat/completions", json=chat, timeout=10)
        assert reply.status_code == 200, reply.text
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
        text = (tmp_path / "up.out").read_text()
        assert text.index("gateway stopped") < text.index("supervisor stopped")
        assert wait_groups_empty([engine_pid], 2) == []
        with pytest.raises(httpx.HTTPError):
            httpx.get(sup_url + "/health", timeout=1)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()
