"""`orchestra up` stops within `gateway.drain_timeout_s` + `engine.stop_timeout_s` of SIGTERM,
whatever its clients hold open: an idle keep-alive connection, the console's event stream, a
stream in flight, a request waiting for a model that is still loading, a load command waiting on
the supervisor. And it leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.conftest import wait_until
from tests.fake_engine import free_port

from .helpers import REPO_ROOT, config_dict, server, wait_groups_empty

pytestmark = pytest.mark.slow

DRAIN_S = 4.0
STOP_S = 3.0


def _hold(url: str, started: threading.Event, method: str = "GET", json: object = None) -> None:
    """Open a request and read it until the server ends it (what a client left open does)."""

    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            with httpx.Client(timeout=None) as client:
                with client.stream(method, url, json=json) as reply:
                    started.set()
                    for _ in reply.iter_bytes():
                        pass
        started.set()

    threading.Thread(target=run, daemon=True).start()


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out


def test_up_exits_within_drain_plus_stop_timeout_with_clients_holding_on(tmp_path: Path) -> None:
    loading = server("beta", tmp_path, "--startup-delay", "300", startup_timeout_s=600)
    cfg = config_dict(
        tmp_path,
        [server("alpha", tmp_path, "--token-rate", "2")],
        pool=[loading],
        gateway={"port": free_port(), "drain_timeout_s": DRAIN_S},
        engine={"stop_timeout_s": STOP_S},
    )
    path = tmp_path / "up.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "up.out"
    with out.open("w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "orchestra.cli", "up", "--config", str(path)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gw = f"http://127.0.0.1:{cfg['gateway']['port']}"
    sup = f"http://127.0.0.1:{cfg['supervisor']['port']}"
    idle = httpx.Client(timeout=5)
    try:
        wait_until(lambda: "Orchestra is up" in out.read_text() or up.poll() is not None, 60)
        assert up.poll() is None, out.read_text()
        # What clients hold open when the operator stops it:
        assert idle.get(gw + "/health").status_code == 200  # idle keep-alive connections
        assert idle.get(sup + "/health").status_code == 200
        held = [threading.Event() for _ in range(4)]
        _hold(gw + "/console/events", held[0])  # an open console tab: never ends by itself
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}
        _hold(gw + "/v1/chat/completions", held[1], "POST", json={**chat, "model": "alpha",
              "stream": True})  # fmt: skip
        _hold(gw + "/v1/chat/completions", held[2], "POST", json={**chat, "model": "beta"})
        _hold(sup + "/models/beta/load", held[3], "POST")
        wait_until(lambda: all(e.is_set() for e in held[:2]), 15, what="the streams open")
        states = lambda: httpx.get(sup + "/models", timeout=5).json()["models"]  # noqa: E731
        wait_until(lambda: states()[1]["state"] == "starting", 15, what="beta loading")
        engines = [e["pid"] for m in states() for e in m["engines"] if e["pid"]]
        family = [up.pid, *(p.pid for p in psutil.Process(up.pid).children(recursive=True))]
        assert len(engines) == 2 and len(family) >= 4  # supervisor, gateway, two engines

        began = time.monotonic()
        up.send_signal(signal.SIGTERM)
        code = up.wait(DRAIN_S + STOP_S + 30)
        took = time.monotonic() - began
        assert code == 0, out.read_text()
        assert took <= DRAIN_S + STOP_S, f"took {took:.1f}s:\n{out.read_text()}"
        assert wait_groups_empty(engines, 2) == []
        assert wait_until(lambda: not _alive(family), 2, what="no process left") is True
    finally:
        idle.close()
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
