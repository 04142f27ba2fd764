"""The supervisor's admin actions in the audit trail (`gateway.audit`): `orchestra load|unload`,
`orchestra adapters load|unload` and a raw control-API call each leave one admin line, refused
and failed ones too, read back by `orchestra audit query --kind admin`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.integration.audit.helpers import lines

from .helpers import REPO_ROOT, SupervisorProcess, config_dict, server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TOKEN = "s3cret-audit-token"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_control_api_actions_have_admin_lines(tmp_path: Path) -> None:
    trail = tmp_path / "logs" / "audit.jsonl"
    base = server("alpha", tmp_path, adapters=[{"name": "sql", "path": str(tmp_path / "sql")}])
    config = config_dict(
        tmp_path,
        [base | {"max_loras": 2}],
        pool=[server("beta", tmp_path)],
        supervisor={"admin_token": TOKEN},
        gateway={"audit": {"path": str(trail), "flush_s": 0.1}},
    )
    sup = SupervisorProcess(config, tmp_path).start()
    cfg = str(sup.path)
    try:
        token = {"authorization": f"Bearer {TOKEN}"}

        def alpha_state() -> str:
            table = httpx.get(sup.url + "/models/alpha", headers=token, timeout=5).json()
            return str(table["state"])

        wait_until(lambda: alpha_state() == "ready", timeout=30, what="alpha ready")
        for args in (
            ("load", "beta", "--config", cfg),
            ("unload", "beta", "--config", cfg),
            ("adapters", "load", "alpha", "chat", str(tmp_path / "chat"), "--config", cfg),
            ("adapters", "unload", "alpha", "chat", "--config", cfg),
        ):
            done = _cli(*args)
            assert done.returncode == 0, done.stdout + done.stderr
        missing = _cli("load", "nope", "--config", cfg)
        assert missing.returncode == 1
        refused = httpx.post(sup.url + "/models/beta/sleep", timeout=10)  # no token
        assert refused.status_code == 401
        headers = {**token, "x-request-id": "req-wake"}
        woken = httpx.post(sup.url + "/models/alpha/wake", headers=headers, timeout=30)
        assert woken.status_code == 200, woken.text
        assert httpx.get(sup.url + "/models", headers=headers, timeout=10).status_code == 200
        wait_until(lambda: len(lines(trail)) >= 7, timeout=10, what="7 admin lines")
    finally:
        sup.stop()
    records = lines(trail)
    assert len(records) == 7  # the read (GET /models) has none; the stop wrote nothing more

    query = _cli("audit", "query", "--path", str(trail), "--kind", "admin", "-o", "json")
    assert query.returncode == 0, query.stderr
    shown: list[dict[str, Any]] = [json.loads(line) for line in query.stdout.splitlines()]
    assert shown == records
    assert {(r["kind"], r["client"]) for r in shown} == {("admin", "127.0.0.1")}
    assert [(r["action"], r["target"], r["adapter"], r["status"], r["who"]) for r in shown] == [
        ("model.load", "beta", None, 200, "admin_token"),
        ("model.unload", "beta", None, 200, "admin_token"),
        ("adapter.load", "alpha", "chat", 200, "admin_token"),
        ("adapter.unload", "alpha", "chat", 200, "admin_token"),
        ("model.load", "nope", None, 404, "admin_token"),
        ("model.sleep", "beta", None, 401, "admin_token"),
        ("model.wake", "alpha", None, 200, "admin_token"),
    ]
    assert shown[4]["error"] == "model_not_found" and shown[5]["error"] == "invalid_admin_token"
    assert shown[6]["request_id"] == "req-wake" and shown[0]["request_id"] is None
    assert shown[2]["path"] == "/models/alpha/adapters" and shown[3]["method"] == "DELETE"
    assert all(r["latency_ms"] >= 0 and r["error"] is None for r in shown[:4])
    # `--model` finds an action by its target.
    beta = _cli("audit", "query", "--path", str(trail), "--model", "beta", "-o", "json")
    assert [json.loads(line)["action"] for line in beta.stdout.splitlines()] == [
        "model.load",
        "model.unload",
        "model.sleep",
    ]
