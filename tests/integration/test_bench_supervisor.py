"""The bench's supervisor paths run and report their figures. Correctness only: the figures are
there, positive and consistent; how fast they are is what `make bench` prints, not a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.swap import swap_figures
from orchestra.control import ControlClient, call_sync
from tests.conftest import GatewayProcess
from tests.fake_engine import free_port
from tests.integration.supervisor.helpers import SupervisorProcess, config_dict, server

REPO = Path(__file__).resolve().parents[2]
TOKEN = "bench-admin-token"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_supervisor_figures_quick(tmp_path: Path) -> None:
    args = ["--supervisor-only", "--quick", "--out-dir", str(tmp_path / "out")]
    out = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--scratch-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert report["results"] == {}  # --supervisor-only: no sweep
    figures = report["supervisor"]
    (row,) = figures["ensure_to_served"].values()
    assert row["health_poll_interval_s"] == 0.1 and row["runs"] == 1
    for key in ("direct_spawn_to_served_s", "ensure_to_served_s", "ensure_to_engine_healthy_s"):
        assert row[key] >= 0.5, (key, row)  # the fake engine's startup delay is in each
    assert len(row["readiness_detection_ms"]) == 1 and row["readiness_detection_ms"][0] >= 0
    assert isinstance(row["supervisor_overhead_ms"], float)
    cache = figures["page_cache"]
    assert cache["file_mb"] == 16
    assert cache["read_evicted_s"] > 0 and cache["read_warm_s"] > 0
    assert cache["fraction_after_preload"] > 0.95
    assert "Supervisor" in out.stdout and "Page cache" in out.stdout
    assert not list(tmp_path.glob("bench-pagecache-*"))  # its scratch file is gone


def test_swap_figures_through_the_control_client_with_a_token(tmp_path: Path) -> None:
    """--swap's supervisor calls go through ControlClient and carry the admin token (the
    supervisor refuses them without it); the first request goes to the gateway as plain HTTP."""
    model = server("swappy", tmp_path, "--startup-delay", "0.2", sleep_mode=True)
    config = config_dict(tmp_path, [], pool=[model], supervisor={"admin_token": TOKEN})
    config["gateway"] = {"host": "127.0.0.1", "port": free_port(), "routing_refresh_s": 0.2}
    supervisor = SupervisorProcess(config, tmp_path).start()
    try:
        refused = swap_figures(supervisor.url, "swappy", None, None, admin_token=None)
        assert "admin token" in refused["cold_start_warm_s"]["error"], refused
        with GatewayProcess(config) as gateway:
            figures = swap_figures(
                supervisor.url, "swappy", gateway.url, model["model"], admin_token=TOKEN
            )
        assert figures["page_cache_controlled"] is True
        for key in (
            "cold_start_evicted_s",
            "cold_start_warm_s",
            "wake_from_sleep_s",
            "on_demand_first_request_s",
        ):
            assert isinstance(figures[key], float) and figures[key] > 0, (key, figures)
        table = call_sync(ControlClient(supervisor.url, TOKEN), lambda c: c.table())
        assert [m["state"] for m in table if m["name"] == "swappy"] == ["ready"]  # left loaded
    finally:
        supervisor.stop()
