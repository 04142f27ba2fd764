"""Today's supervisor, run by a Ray actor pinned to its node.

`SupervisorActor` (created detached and named by the reconciler, `reconcile.py`) writes the
node's copy of the config and starts `python -m orchestra.supervisor` as its subprocess, in its
own process group; the engines stay the supervisor's subprocesses, as on one machine. The
control API and the engines bind the node's address (Ray's view of it) and need the configured
admin token.

Lifetimes, which node death and rejoin rely on:
- the supervisor dies with the actor's process (the kernel's parent-death watch,
  `orchestra.lifetime`) by SIGUSR1: the graceful exit that *leaves the engines serving*;
- its state lives in `supervisor.state_dir/<node address>`, stable when the node rejoins under
  a new Ray id, so the next actor's supervisor adopts the engines still alive
  (`supervisor/adoption.py`);
- `stop()` (`orchestra ray down`) is SIGTERM: the supervisor stops every engine first.
"""

from __future__ import annotations

import copy
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from orchestra.config import parse_config
from orchestra.health import NotAlive, wait_healthy_sync
from orchestra.lifetime import spawn, stop_group

_POLL_S = 0.1
_PROBE_TIMEOUT_S = 1.0
_LOG_TAIL_BYTES = 4000


def node_config(raw: dict[str, Any], address: str) -> dict[str, Any]:
    """The node's copy of `raw` (paths already absolute): control API and engines on
    `address`, state and logs in folders of the node's own (nodes may share a filesystem)."""
    data = copy.deepcopy(raw)
    data.pop("supervisors", None)
    sup = data.setdefault("supervisor", {})
    engine = data.setdefault("engine", {})
    ray = data.get("ray") or {}
    sup["host"] = address
    if ray.get("admin_token"):
        sup["admin_token"] = ray["admin_token"]
    sup["state_dir"] = str(Path(sup.get("state_dir", "run")) / address)
    engine["host"] = engine["advertise_host"] = address
    engine["log_dir"] = str(Path(engine.get("log_dir", "logs")) / address)
    return data


class SupervisorActor:
    """Owns one supervisor process on this node (see the module doc)."""

    def __init__(self, raw: dict[str, Any], address: str, stop_timeout_s: float) -> None:
        import ray  # the actor runs inside Ray; nothing else of this module needs it

        self.node_id = ray.get_runtime_context().get_node_id()
        self.address = address
        data = node_config(raw, address)
        config = parse_config(data, f"the config sent to node {address}")  # fail here, named
        state = Path(config.supervisor.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self.path = state / "ray-supervisor.yaml"
        self.path.write_text(yaml.safe_dump(data))
        self.log = state / "ray-supervisor.log"
        self.url = f"http://{address}:{config.supervisor.port}"
        self._stop_timeout_s = stop_timeout_s
        argv = [sys.executable, "-m", "orchestra.supervisor", "--config", str(self.path)]
        # A sync actor's methods (its __init__ too) run on its worker's main thread, which
        # `spawn` needs to set the watch (checked with Ray 2: threading.main_thread() there).
        with self.log.open("ab") as log:
            self.proc = spawn(argv, stdout=log, death_signal=signal.SIGUSR1)

    def info(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "url": self.url,
            "pid": self.proc.pid,
            "running": self.proc.poll() is None,
        }

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Block until the control API's /health answers; raise with the log's tail if the
        supervisor exits or `timeout_s` passes."""
        try:
            wait_healthy_sync(
                self.url,
                timeout_s=timeout_s,
                interval_s=_POLL_S,
                probe_timeout_s=_PROBE_TIMEOUT_S,
                is_alive=lambda: self.proc.poll() is None,
            )
        except NotAlive:
            raise RuntimeError(f"supervisor on {self.address} exited:\n{self._tail()}") from None
        except TimeoutError as exc:
            raise RuntimeError(
                f"supervisor on {self.address} not ready in {timeout_s}s ({exc}):\n{self._tail()}"
            ) from None
        return self.info()

    def stop(self) -> int:
        """SIGTERM (the supervisor stops its engines: they run in sessions of their own, so
        the group's signal reaches only the supervisor), then SIGKILL of its group after
        `engine.stop_timeout_s` and some. Returns its exit status."""
        return stop_group(self.proc, self._stop_timeout_s)

    def _tail(self) -> str:
        data = self.log.read_bytes() if self.log.exists() else b""
        return data[-_LOG_TAIL_BYTES:].decode(errors="replace")
