"""No engine process (nor a worker it forked) survives the supervisor: SIGTERM, SIGKILL, and a
supervisor restart that finds leftovers of an earlier run. Processes are counted by group."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import wait_until

from .helpers import (
    REPO_ROOT,
    SupervisorProcess,
    config_dict,
    group_members,
    server,
    wait_groups_empty,
)

SPAWNING = REPO_ROOT / "tests" / "integration" / "supervisor" / "spawning_engine.py"


def _dead(proc: psutil.Process) -> bool:
    """Gone or a zombie (not our child: whoever inherited it reaps it, maybe never)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _config(tmp: Path, on_exit: str = "kill") -> dict[str, Any]:
    # `kill`: a dead supervisor takes its engines with it (adopt mode: test_adoption.py).
    # SIGTERM / Ctrl-C stop every engine in both modes.
    return config_dict(
        tmp,
        [server("plain", tmp), server("forks", tmp)],
        engine={"command": [sys.executable, str(SPAWNING)], "stop_timeout_s": 1.0},
        supervisor={"on_supervisor_exit": on_exit},
    )


def _ready_groups(sup: SupervisorProcess) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        models = sup.models()
        if all(m["state"] == "ready" for m in models.values()):
            return [m["engines"][0]["pid"] for m in models.values()]
        time.sleep(0.05)
    raise AssertionError(f"hot set not ready:\n{sup.output()}")


def _started(tmp: Path, on_exit: str = "kill") -> tuple[SupervisorProcess, list[int]]:
    sup = SupervisorProcess(_config(tmp, on_exit), tmp).start()
    groups = _ready_groups(sup)
    for pgid in groups:  # the engine and its forked worker
        assert len(group_members(pgid)) == 2, group_members(pgid)
    return sup, groups


@pytest.mark.slow
@pytest.mark.parametrize("on_exit", ["kill", "adopt"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_no_orphans_after_supervisor_sigterm_or_ctrl_c(
    tmp_path: Path, sig: int, on_exit: str
) -> None:
    sup, groups = _started(tmp_path, on_exit)
    try:
        sup.signal(sig)
        # uvicorn re-raises the signal it handled once shutdown is complete
        assert sup.proc is not None and sup.proc.wait(15) in (0, -sig)
        assert wait_groups_empty(groups, 1.0) == []  # gone by the time it exited
    finally:
        sup.stop()
    assert "stopping -> cold" in sup.output()


@pytest.mark.slow
def test_no_orphans_after_supervisor_sigkill(tmp_path: Path) -> None:
    sup, groups = _started(tmp_path)
    try:
        sup.signal(signal.SIGKILL)
        assert sup.proc is not None and sup.proc.wait(5) == -signal.SIGKILL
        # The reaper: SIGTERM to each group, `stop_timeout_s` (1 s), then SIGKILL.
        assert wait_groups_empty(groups, 5.0) == []
    finally:
        sup.stop()


@pytest.mark.slow
def test_restarted_supervisor_kills_leftovers_of_a_dead_one(tmp_path: Path) -> None:
    """Reaper gone too (frozen, then killed with the supervisor): the next start cleans up."""
    sup, groups = _started(tmp_path)
    assert sup.proc is not None
    (reaper,) = [
        p for p in psutil.Process(sup.proc.pid).children() if "reaper.py" in " ".join(p.cmdline())
    ]
    reaper.suspend()  # it cannot react to the supervisor's death
    sup.signal(signal.SIGKILL)
    assert sup.proc.wait(5) == -signal.SIGKILL
    reaper.kill()
    wait_until(lambda: _dead(reaper), 5, what="the reaper dead")
    assert all(group_members(g) for g in groups)  # engines and workers orphaned
    sup2 = SupervisorProcess(_config(tmp_path), tmp_path).start()
    try:
        assert wait_groups_empty(groups, 3.0) == []
        assert "killed leftover engine groups" in sup2.output()
        _ready_groups(sup2)
    finally:
        sup2.stop()
