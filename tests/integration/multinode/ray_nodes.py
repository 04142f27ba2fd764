"""A real two-node Ray cluster on this machine: the head in the root namespace on a veth's root
address, a worker inside a network namespace on the other end (tests/netns.py).

Ray 2.60 runs such a cluster with token authentication: every process here gets
`RAY_AUTH_MODE=token` and a token made for this run (`RAY_AUTH_TOKEN`), `HOME` points at a
temporary folder (the user's `~/.ray` is never read or written) and each node has its own
`--temp-dir`. Ray stays small (`--num-cpus 1`, 80 MB object store, no dashboard) and every port
is picked free. Node death is tuned on the head's GCS by environment (`RAY_health_check_*`,
`HEALTH`): a raylet that stops answering is dead after ~threshold x (period + timeout), 3 s.

`close()` kills both nodes' process groups and, as a last resort, every process whose command
line names this run's folder (actors' supervisors and engines live in their own sessions).
Shared by the Ray tests: `up_config`, `gateway_config`, the `ray_cluster` fixture (conftest).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from orchestra.lifetime import spawn
from tests.conftest import REPO_ROOT, GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import free_port
from tests.netns import Cluster, Node, ensure_iproute2

from .cluster import FAKE_ENGINE

# Ray's defaults mark a node dead ~13 s after its raylet dies (period 3 s x threshold 5 ...).
HEALTH = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}
RESOURCE = "orchestra"
TOKEN = "ray-test-admin-token"  # the supervisors' admin token
NAMESPACE = "orchestra-test"
_RAY = [sys.executable, "-m", "ray.scripts.scripts"]
T = TypeVar("T")
_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}")


class RayNodes:
    def __init__(self, head_address: str, worker: Node) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="orcray", dir="/tmp"))  # short: unix sockets
        self.head_address = head_address
        self.worker = worker
        self.port = free_port()
        self.address = f"{head_address}:{self.port}"
        self.token = secrets.token_hex(32)
        (self.dir / "home").mkdir()
        self.env = {
            **os.environ,
            "HOME": str(self.dir / "home"),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": str(REPO_ROOT),
        }
        self.head: subprocess.Popen[bytes] | None = None
        self.worker_proc: subprocess.Popen[bytes] | None = None
        self._worker_runs = 0

    def _argv(self, temp: str) -> list[str]:
        return [
            "--block",
            "--num-cpus=1",
            "--object-store-memory=80000000",
            f"--resources={json.dumps({RESOURCE: 1})}",
            f"--temp-dir={self.dir / temp}",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]

    def _log(self, name: str) -> IO[bytes]:
        return (self.dir / f"{name}.log").open("ab")

    def start_head(self) -> None:
        argv = [
            *_RAY,
            "start",
            "--head",
            f"--node-ip-address={self.head_address}",
            f"--port={self.port}",
            "--include-dashboard=false",
            *self._argv("head"),
        ]
        with self._log("head") as log:
            self.head = spawn(argv, env={**self.env, **HEALTH}, stdout=log, cwd=REPO_ROOT)
        wait_until(lambda: self._started("head"), 90, 0.2, f"ray head\n{self.logs('head')}")

    def start_worker(self) -> None:
        """`ray start --address` inside the namespace (again, after a kill: the node rejoins
        under a new Ray id)."""
        self._worker_runs += 1
        temp = f"worker{self._worker_runs}"
        argv = [
            *_RAY,
            "start",
            f"--address={self.address}",
            f"--node-ip-address={self.worker.address}",
            *self._argv(temp),
        ]
        with self._log(temp) as log:
            # `ip netns exec` with our environment: the token must reach the worker's raylet.
            self.worker_proc = spawn(
                ["ip", "netns", "exec", self.worker.name, "env", *_env_args(self.env), *argv],
                stdout=log,
                cwd=REPO_ROOT,
            )
        self.worker.procs.append(self.worker_proc)
        wait_until(lambda: self._started(temp), 90, 0.2, f"ray worker\n{self.logs(temp)}")

    def _started(self, name: str) -> bool:
        for proc in (self.head, self.worker_proc):
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"ray start exited:\n{self.logs(name)}")
        return "Ray runtime started" in self.logs(name)

    def orchestra(
        self, verb: str, config: Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`orchestra ray VERB --config CONFIG --address <this cluster>`."""
        argv = [sys.executable, "-m", "orchestra.cli", "ray", verb, "--config", str(config)]
        done = subprocess.run(
            [*argv, "--address", self.address],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def raylet_pid(self, temp: str) -> int:
        """The raylet of the node whose --temp-dir is `temp`."""
        marker = str(self.dir / temp)
        for pid, cmd in _processes():
            if "/raylet/raylet" in cmd.split(" ", 1)[0] and marker in cmd:
                return pid
        raise AssertionError(f"no raylet under {marker}")

    def kill_worker_raylet(self) -> None:
        os.kill(self.raylet_pid(f"worker{self._worker_runs}"), signal.SIGKILL)

    def stop_worker(self) -> None:
        """What remains of the worker's Ray (its `ray start --block` group) after a raylet
        kill; the supervisor and engines live in their own sessions and stay."""
        if self.worker_proc is not None:
            _kill_group(self.worker_proc)

    def node_declared_dead(self) -> float | None:
        """Wall-clock time the head's GCS declared a node dead (its health checks failed), if it
        has: from the GCS's log."""
        for log in (self.dir / "head" / "session_latest" / "logs").glob("gcs_server.*"):
            found = logged_at(log.read_text(errors="replace"), "Node is dead because")
            if found is not None:
                return found
        return None

    def logs(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def close(self, extra_marker: str) -> None:
        """Both nodes, and every process naming this run's folders (`extra_marker`: the
        test's tmp dir, where supervisor configs and model files live)."""
        for proc in (self.worker_proc, self.head):
            if proc is not None:
                _kill_group(proc)
        markers = (str(self.dir), extra_marker)
        for pid, cmd in _processes():
            if pid != os.getpid() and any(m in cmd for m in markers):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def logged_at(text: str, marker: str) -> float | None:
    """Wall-clock time of the first log line holding `marker`, from its local-time stamp
    (`2026-12-07 19:04:10,123`: Python's `asctime`, and Ray's own logs)."""
    for line in text.splitlines():
        if marker in line and (stamp := _STAMP.search(line)) is not None:
            return datetime.strptime(stamp.group(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def _env_args(env: dict[str, str]) -> list[str]:
    keys = ("HOME", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED", "PYTHONPATH")
    return [f"{k}={env[k]}" for k in keys]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            raw = (entry / "cmdline").read_bytes()
            found.append((int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace")))
    return found


@contextmanager
def ray_nodes(tmp: Path, worker: bool) -> Iterator[RayNodes]:
    """A Ray head in the root namespace at a namespace's peer address (off loopback), and with
    `worker` a second node inside the namespace; stopped with whatever `orchestra ray up` put
    on them (`ray-up.yaml` in `tmp`), whatever the test did. Skips without iproute2 or Ray."""
    why = ensure_iproute2()
    if why is not None:
        pytest.skip(why)
    pytest.importorskip("ray")
    cluster = Cluster(1)
    (node,) = cluster.nodes
    nodes = RayNodes(node.address.rsplit(".", 1)[0] + ".1", node)
    try:
        nodes.start_head()
        if worker:
            nodes.start_worker()
        yield nodes
    finally:
        nodes.orchestra("down", tmp / "ray-up.yaml", check=False)
        nodes.close(str(tmp))
        cluster.close()


def up_config(tmp: Path, engine_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """`orchestra ray up`'s config: `both` on every node, `cold` in the rotation pool; fake
    engines (with `engine_args`, e.g. a token rate)."""
    for name in ("both", "cold"):
        (tmp / f"{name}.bin").write_bytes(b"\0" * 4096)
    return {
        "servers": [{"name": "both", "model": str(tmp / "both.bin")}],
        "rotation_pool": [{"name": "cold", "model": str(tmp / "cold.bin")}],
        "engine": {
            "command": [sys.executable, str(FAKE_ENGINE), *engine_args],
            "model_arg": "--model",
            "log_dir": str(tmp / "logs"),
            "first_port": free_port(),
            "health_poll_interval_s": 0.02,
            "startup_timeout_s": 20,
            "stop_timeout_s": 2,
        },
        "supervisor": {
            "port": free_port(),
            "admin_token": TOKEN,
            "gpus": [],
            "state_dir": str(tmp / "run"),
            "gateway_ttl_s": 3,
            "drain_timeout_s": 3,
        },
        "rotation": {"enabled": False},
        "preload": {"enabled": False, "interval_s": 3600},
        "ray": {"namespace": NAMESPACE, "node_resource": RESOURCE, "reconcile_s": 0.5},
    }


def gateway_config(nodes: RayNodes, **gateway: Any) -> dict[str, Any]:
    """A gateway that names no model and no supervisor, only `ray:` (read every 0.2 s)."""
    section = fast_gateway_section(
        free_port(), routing_refresh_s=0.2, node_down_after_s=1, **gateway
    )
    ray = {"address": nodes.address, "namespace": NAMESPACE, "admin_token": TOKEN}
    return {"ray": {**ray, "discover_s": 0.2}, "gateway": section}


def wait_gateway(gw: GatewayProcess, predicate: Callable[[], T], timeout: float, what: str) -> T:
    """`wait_until`, with the gateway's log in the failure."""
    try:
        return wait_until(predicate, timeout, 0.05, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ngateway log:\n{gw.output()[-4000:]}") from None
