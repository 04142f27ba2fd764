"""Helpers for supervisor integration tests: configs that launch the fake engine, a running
control app (its real lifespan, driven in-process), a supervisor subprocess, group counting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import yaml

from orchestra.config import OrchestraConfig, parse_config
from orchestra.health import NotAlive, wait_healthy_sync
from orchestra.supervisor.api import create_app
from orchestra.supervisor.manager import Manager
from tests.conftest import REPO_ROOT, parse_metrics
from tests.fake_engine import free_port

FAKE_ENGINE = REPO_ROOT / "tests" / "fake_engine.py"
T = TypeVar("T")


def server(name: str, tmp: Path, *args: str, **fields: Any) -> dict[str, Any]:
    """A managed model launched as the fake engine, on a free port, with a small weight file."""
    weights = tmp / f"{name}.bin"
    if not weights.exists():
        weights.write_bytes(b"\0" * 4096)
    return {"name": name, "model": str(weights), "port": free_port(), "extra_args": list(args)} | (
        fields
    )


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_dict(
    tmp: Path, servers: list[dict[str, Any]], pool: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "servers": servers,
        "rotation_pool": pool or [],
        "engine": {
            "command": [sys.executable, str(FAKE_ENGINE)],
            "model_arg": "--model",
            "log_dir": str(tmp / "logs"),
            "health_poll_interval_s": 0.02,
            "startup_timeout_s": 20,
            "stop_timeout_s": 3,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 1.0,
            "max_restarts": 3,
        },
        "supervisor": {"gpus": [], "state_dir": str(tmp / "run"), "port": free_port()},
        "rotation": {"enabled": False},
        "preload": {"enabled": False, "interval_s": 3600},
    }
    return _merge(base, extra)


def make_config(tmp: Path, servers: list[dict[str, Any]], **kw: Any) -> OrchestraConfig:
    return parse_config(config_dict(tmp, servers, **kw))


@asynccontextmanager
async def running(
    config: OrchestraConfig, gpus: list[int] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Manager]]:
    """The control app with its real lifespan (engines are real subprocesses)."""
    app = create_app(config, gpus=gpus)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sup", timeout=60) as c:
            yield c, app.state.manager


def run(coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def until(
    predicate: Callable[[], bool | Awaitable[bool]], limit_s: float = 15, what: str = ""
) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def group_members(pgid: int) -> list[int]:
    pids = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
    return pids


def wait_groups_empty(pgids: list[int], timeout: float) -> list[int]:
    """Groups still populated after `timeout` (polls; returns [] when all are gone)."""
    deadline = time.monotonic() + timeout
    alive = list(pgids)
    while alive and time.monotonic() < deadline:
        alive = [g for g in alive if group_members(g)]
        time.sleep(0.05)
    return [g for g in alive if group_members(g)]


class SupervisorProcess:
    """`python -m orchestra.supervisor --config FILE` as a subprocess (own session), like
    `orchestra`."""

    def __init__(self, config: dict[str, Any], tmp: Path) -> None:
        self.config = config
        self.path = tmp / "supervisor.yaml"
        self.log_path = tmp / "supervisor.log"
        self.url = f"http://127.0.0.1:{config['supervisor']['port']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> SupervisorProcess:
        self.path.write_text(yaml.safe_dump(self.config))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestra.supervisor", "--config", str(self.path)],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.proc
        try:
            wait_healthy_sync(
                self.url,
                timeout_s=timeout,
                interval_s=0.05,
                probe_timeout_s=1.0,
                is_alive=lambda: proc.poll() is None,
            )
        except (NotAlive, TimeoutError) as exc:
            raise RuntimeError(f"supervisor did not come up ({exc}):\n{self.output()}") from None
        return self

    def models(self) -> dict[str, dict[str, Any]]:
        reply = httpx.get(self.url + "/models", timeout=5).json()
        return {m["name"]: m for m in reply["models"]}

    def metric(self, name: str) -> float:
        """The sum of a metric's samples over all labels."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return sum(v for (n, _), v in parse_metrics(text).items() if n == name)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
