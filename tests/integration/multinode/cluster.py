"""Two "machines" on this one: a supervisor with fake engines per network namespace, and the
gateway in the root namespace talking to both over veth links (see tests/netns.py).

Used by the multi-node tests and by `python -m bench.multinode` (the figures)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from orchestra.health import NotAlive, wait_healthy_sync
from tests.conftest import REPO_ROOT, GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import free_port
from tests.netns import Node

FAKE_ENGINE = REPO_ROOT / "tests" / "fake_engine.py"
CONTROL_PORT = 8100  # the same on every node: each has its own network stack


def model(name: str, tmp: Path, port: int, **fields: Any) -> dict[str, Any]:
    weights = tmp / f"{name}.bin"
    if not weights.exists():
        weights.write_bytes(b"\0" * 4096)
    return {"name": name, "model": str(weights), "port": port, **fields}


class NodeSupervisor:
    """`python -m orchestra.supervisor` inside a node; engines bind the node's address (off
    loopback, so they get an --api-key) and the control API needs the node's admin token."""

    def __init__(
        self,
        node: Node,
        tmp: Path,
        servers: list[dict[str, Any]],
        pool: list[dict[str, Any]] | None = None,
        **supervisor: Any,
    ) -> None:
        self.node = node
        self.dir = tmp / node.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = f"token-{node.name}"
        self.url = f"http://{node.address}:{CONTROL_PORT}"
        self.config = {
            "servers": servers,
            "rotation_pool": pool or [],
            "engine": {
                "command": [sys.executable, str(FAKE_ENGINE)],
                "model_arg": "--model",
                "host": node.address,
                "log_dir": str(self.dir / "logs"),
                "health_poll_interval_s": 0.02,
                "startup_timeout_s": 20,
                "stop_timeout_s": 2,
            },
            "supervisor": {
                "host": node.address,
                "port": CONTROL_PORT,
                "admin_token": self.token,
                "gpus": [],
                "state_dir": str(self.dir / "run"),
                "gateway_ttl_s": 3,
                "drain_timeout_s": 3,
                **supervisor,
            },
            "rotation": {"enabled": False},
            "preload": {"enabled": False, "interval_s": 3600},
        }
        self.path = self.dir / "supervisor.yaml"
        self.log = self.dir / "supervisor.log"
        self.proc: Any = None

    def start(self, timeout: float = 30) -> NodeSupervisor:
        self.path.write_text(yaml.safe_dump(self.config))
        with self.log.open("ab") as log:
            argv = [sys.executable, "-m", "orchestra.supervisor", "--config", str(self.path)]
            self.proc = self.node.popen(argv, log, REPO_ROOT)
        proc = self.proc
        try:
            wait_healthy_sync(
                self.url,
                timeout_s=timeout,
                interval_s=0.05,
                probe_timeout_s=1.0,
                is_alive=lambda: proc.poll() is None,
            )
        except NotAlive:
            raise AssertionError(f"supervisor exited:\n{self.output()}") from None
        except TimeoutError as exc:
            raise AssertionError(
                f"supervisor in {self.node.name}: {exc}\n{self.output()}"
            ) from None
        return self

    def models(self) -> dict[str, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}"}
        reply = httpx.get(self.url + "/models", headers=headers, timeout=5).json()
        return {m["name"]: m for m in reply["models"]}

    def wait_ready(self, *names: str, timeout: float = 30) -> dict[str, dict[str, Any]]:
        def ready() -> dict[str, dict[str, Any]] | None:
            table = self.models()
            return table if all(table[n]["state"] == "ready" for n in names) else None

        return wait_until(ready, timeout, 0.05, f"{names} ready on {self.node.name}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def gateway_for(
    sups: list[NodeSupervisor], servers: list[str], pool: list[str] | None = None, **gw: Any
) -> GatewayProcess:
    """A gateway in the root namespace that knows every node's supervisor."""
    section = fast_gateway_section(free_port(), routing_refresh_s=0.2, node_down_after_s=1.0, **gw)
    return GatewayProcess(
        {
            "servers": [{"name": n, "model": f"/models/{n}"} for n in servers],
            "rotation_pool": [{"name": n, "model": f"/models/{n}"} for n in pool or []],
            "supervisors": [
                {"name": s.node.name, "url": s.url, "admin_token": s.token} for s in sups
            ],
            "gateway": section,
        }
    )


def completion(gw_url: str, name: str, timeout: float = 15) -> httpx.Response:
    body = {"model": name, "prompt": "hello there", "max_tokens": 2}
    return httpx.post(gw_url + "/v1/completions", json=body, timeout=timeout)


def admin_status(gw: GatewayProcess) -> dict[str, Any]:
    reply: dict[str, Any] = httpx.get(gw.url + "/admin/status", timeout=5).json()
    return reply


def replica_urls(gw: GatewayProcess, name: str) -> list[str]:
    """Its replicas in the gateway; none before a supervisor has reported it."""
    model = admin_status(gw)["models"].get(name)
    return [r["url"] for r in model["replicas"]] if model else []


@dataclass(frozen=True)
class Sent:
    """One request of a `Load`: when it was sent and answered (monotonic), and by what."""

    sent: float
    done: float
    status: int
    replica: str  # the engine that served it (`x-orchestra-replica`: host:port), or ""


class Load:
    """Sequential requests for some models through the gateway until stopped; counts statuses
    and keeps each request's `Sent`."""

    def __init__(self, gw_url: str, *names: str) -> None:
        self.gw_url, self.names = gw_url, names
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.sent: list[Sent] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            name = self.names[i % len(self.names)]
            i += 1
            sent = time.monotonic()
            try:
                reply = completion(self.gw_url, name)
                self.statuses[name, reply.status_code] += 1
                replica = reply.headers.get("x-orchestra-replica", "")
                self.sent.append(Sent(sent, time.monotonic(), reply.status_code, replica))
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))
            time.sleep(0.005)

    def failed(self) -> int:
        return sum(n for (_, code), n in self.statuses.items() if code != 200) + len(self.errors)

    def ok(self, name: str) -> int:
        return self.statuses[name, 200]
