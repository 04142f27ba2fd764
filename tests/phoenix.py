"""Arize Phoenix as the tests' trace collector: an OTLP/HTTP receiver with storage and a query
API, run locally (`phoenix serve`), in a venv of its own (`.venv-phoenix`, ~860 MB: never in
the project's dependencies; `make phoenix` or the first test that needs it makes it, later runs
reuse it).

`PhoenixProcess` starts it on free ports with a working directory of its own, waits for
`/healthz`, and stops its process group (SIGTERM, then SIGKILL); it dies with the test process
too (`orchestra.lifetime.spawn`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from orchestra.health import NotAlive, wait_healthy_sync
from orchestra.lifetime import spawn, stop_group
from tests.conftest import REPO_ROOT
from tests.fake_engine import free_port

VENV = REPO_ROOT / ".venv-phoenix"
INSTALLED = VENV / ".installed"  # written once the install finished (`make phoenix` too)
INSTALL_TIMEOUT_S = 1200.0  # measured ~1 min; a busy machine and a cold pip cache take longer
START_TIMEOUT_S = 180.0  # measured ~13 s to /healthz on a busy machine
STOP_GRACE_S = 15.0


def ensure_phoenix() -> Path:
    """The `phoenix` command, installed into `.venv-phoenix` when it is not there yet."""
    if not INSTALLED.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "arize-phoenix"],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        INSTALLED.touch()
    return VENV / "bin" / "phoenix"


class PhoenixProcess:
    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="orchestra-phoenix-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(self._dir.name) / "phoenix.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def otlp_endpoint(self) -> str:
        """What `tracing.endpoint` is set to: Phoenix takes OTLP/HTTP at `/v1/traces` on its
        one HTTP port."""
        return self.url

    def start(self) -> PhoenixProcess:
        phoenix = ensure_phoenix()
        env = {
            **os.environ,
            "PHOENIX_WORKING_DIR": str(Path(self._dir.name) / "work"),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(free_port()),
        }
        with self.log_path.open("wb") as log:
            self.proc = spawn([str(phoenix), "serve"], stdout=log, env=env, cwd=self._dir.name)
        proc = self.proc
        try:
            wait_healthy_sync(
                self.url,
                timeout_s=START_TIMEOUT_S,
                interval_s=0.5,
                probe_timeout_s=2.0,
                is_alive=lambda: proc.poll() is None,
                path="/healthz",
            )
        except (NotAlive, TimeoutError):
            output = self.output()
            self.stop()
            raise RuntimeError(f"phoenix did not come up:\n{output[-4000:]}") from None
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """Every span Phoenix holds for `project` (its REST API, page by page)."""
        spans: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            reply = httpx.get(f"{self.url}/v1/projects/{project}/spans", params=params, timeout=30)
            if reply.status_code == 404:  # no span yet: the project is made by the first one
                return spans
            reply.raise_for_status()
            page = reply.json()
            spans += page.get("data", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return spans

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, STOP_GRACE_S)
        self._dir.cleanup()

    def __enter__(self) -> PhoenixProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
