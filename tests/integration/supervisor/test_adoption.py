"""A supervisor restart drops nothing (`on_supervisor_exit: adopt`, the default): after a
SIGKILL or a SIGUSR1 exit the engines keep serving, and the next supervisor with the same config
adopts them (same pid, READY at once); an engine whose config changed is killed instead. SIGTERM
still stops everything (test_orphans.py)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until

from .helpers import SupervisorProcess, config_dict, group_members, server, wait_groups_empty


def _config(tmp: Path) -> dict[str, Any]:
    return config_dict(tmp, [server("a", tmp)], engine={"stop_timeout_s": 1.0})


def _ready_pid(sup: SupervisorProcess) -> int:
    def ready() -> int | None:
        model = sup.models()["a"]
        return model["engines"][0]["pid"] if model["state"] == "ready" else None

    return int(wait_until(ready, 20, what="model a ready"))


def _answers(url: str) -> bool:
    body = {"model": "a", "prompt": "hi", "max_tokens": 2}
    return httpx.post(url + "/v1/completions", json=body, timeout=5).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGUSR1], ids=["SIGKILL", "SIGUSR1"])
def test_restarted_supervisor_adopts_live_engines(tmp_path: Path, sig: int) -> None:
    config = _config(tmp_path)  # one config (its ports are drawn once)
    sup = SupervisorProcess(config, tmp_path).start()
    sup2: SupervisorProcess | None = None
    pid = _ready_pid(sup)
    url = sup.models()["a"]["engines"][0]["url"]
    try:
        sup.signal(sig)
        assert sup.proc is not None and sup.proc.wait(15) in (0, -sig)
        assert group_members(pid) and _answers(url)  # still serving, supervisor gone
        sup2 = SupervisorProcess(config, tmp_path).start()
        assert _ready_pid(sup2) == pid  # adopted, not restarted
        assert "adopted engine a" in sup2.output()
        assert _answers(url)
        sup2.stop()  # SIGTERM: the adopted engine is stopped like any other
        assert wait_groups_empty([pid], 5.0) == []
    finally:
        sup.stop()
        if sup2 is not None:
            sup2.stop()


@pytest.mark.slow
def test_engine_whose_config_changed_is_killed_not_adopted(tmp_path: Path) -> None:
    config = _config(tmp_path)
    sup = SupervisorProcess(config, tmp_path).start()
    sup2: SupervisorProcess | None = None
    pid = _ready_pid(sup)
    try:
        sup.signal(signal.SIGKILL)
        assert sup.proc is not None and sup.proc.wait(5) == -signal.SIGKILL
        config["servers"][0]["extra_args"] = ["--ttft-ms", "1"]  # same port, new argv
        sup2 = SupervisorProcess(config, tmp_path).start()
        assert wait_groups_empty([pid], 5.0) == []
        assert "its config changed" in sup2.output()
        assert _ready_pid(sup2) != pid  # started afresh
    finally:
        sup.stop()
        if sup2 is not None:
            sup2.stop()
