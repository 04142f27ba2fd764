"""`orchestra status` (compact at 80 columns, `-o wide`, `-o json`), `orchestra logs -f` and
`orchestra top` as a user runs them: subprocesses against a real supervisor (fake engines) and
a real gateway."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess, wait_until
from tests.fake_engine import free_port

from .helpers import REPO_ROOT, SupervisorProcess, config_dict, server

pytestmark = pytest.mark.slow

ORCHESTRA = [sys.executable, "-m", "orchestra.cli"]
LONG = "a-model-name-that-is-much-too-long-for-an-eighty-column-terminal-table"


def _unread_request(port: int) -> bool:
    """A request sits unread on a connection to local `port` (its server is stopped): the
    kernel's receive queue of that socket is not empty (/proc/net/tcp)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                fields = row.split()
                local, state, queues = fields[1], fields[3], fields[4]
                rx = int(queues.split(":")[1], 16)
                if int(local.rsplit(":", 1)[1], 16) == port and state == "01" and rx > 0:
                    return True
    return False


def _env(columns: int) -> dict[str, str]:
    return {**os.environ, "COLUMNS": str(columns), "PYTHONUNBUFFERED": "1", "TERM": "dumb"}


def _cli(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORCHESTRA, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(columns),
    )


def test_status_views_logs_follow_and_top(tmp_path: Path) -> None:
    cfg = config_dict(
        tmp_path,
        [server("alpha", tmp_path), server(LONG, tmp_path)],
        gateway={"port": free_port(), "drain_timeout_s": 1, "routing_refresh_s": 0.2},
    )
    sup = SupervisorProcess(cfg, tmp_path).start()
    conf = str(sup.path)
    try:
        wait_until(
            lambda: all(m["state"] == "ready" for m in sup.models().values()), 20, what="ready"
        )
        status = _cli("status", "--config", conf)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.rstrip("\n").splitlines()
        assert max(map(len, lines)) <= 80, lines
        assert len(lines) == 3  # header + one line per model
        assert lines[1].split()[:2] == ["alpha", "ready"]
        assert lines[2].startswith(LONG[:10]) and "…" in lines[2] and " ready " in lines[2]

        wide = _cli("status", "-o", "wide", "--config", conf, columns=250)
        assert "last start" in wide.stdout and LONG[:60] in wide.stdout, wide.stdout
        narrow = _cli("status", "-o", "wide", "--config", conf, columns=80)
        assert LONG in narrow.stdout and "last start" in narrow.stdout, narrow.stdout  # unfolded

        data = json.loads(_cli("status", "-o", "json", "--config", conf).stdout)
        assert {m["name"]: m["summary"]["state"] for m in data["models"]} == {
            "alpha": "ready",
            LONG: "ready",
        }

        # logs -f: the tail, then the lines a restart writes, until Ctrl-C.
        follow = subprocess.Popen(
            [*ORCHESTRA, "logs", "alpha", "-f", "-n", "3", "--config", conf],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(120),
        )
        seen: queue.Queue[str] = queue.Queue()
        assert follow.stdout is not None
        reader = threading.Thread(target=lambda: [seen.put(x) for x in follow.stdout], daemon=True)
        reader.start()
        got: list[str] = []

        def has(text: str, times: int = 1) -> bool:
            while not seen.empty():
                got.append(seen.get())
            return sum(text in line for line in got) >= times

        wait_until(lambda: has("listening"), 15, what="the log tail")
        restarted = httpx.post(f"{sup.url}/models/alpha/restart", timeout=30)
        assert restarted.json()["state"] == "ready"
        wait_until(lambda: has("listening", 2), 15, what=f"the restart's lines in {got}")
        assert has("--- orchestra: starting alpha")
        # Ctrl-C ends it at once whatever it waits on: here an HTTP call that gets no answer
        # (the supervisor is stopped), well before that call's own timeout (10 s).
        sup.signal(signal.SIGSTOP)
        try:
            port = int(sup.url.rsplit(":", 1)[1])
            wait_until(lambda: _unread_request(port), 10, what="a call waiting, unanswered")
            interrupted = time.monotonic()
            follow.send_signal(signal.SIGINT)
            assert follow.wait(10) == 0
            assert time.monotonic() - interrupted < 5.0
        finally:
            sup.signal(signal.SIGCONT)

        # top: the table and the gateway's per-model rates, redrawn; --count ends it.
        with GatewayProcess(cfg) as gateway:
            gateway.wait_ready("alpha", timeout=20)
            top = subprocess.Popen(
                [*ORCHESTRA, "top", "--interval", "0.3", "--count", "8", "--config", conf],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=_env(80),
            )
            chat = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
            deadline = time.monotonic() + 30
            while top.poll() is None and time.monotonic() < deadline:
                assert httpx.post(gateway.url + "/v1/chat/completions", json=chat).is_success
            out, _ = top.communicate(timeout=30)
        assert top.returncode == 0, out
        last = out.rstrip("\n").splitlines()
        assert max(map(len, last)) <= 80, last
        header = last.index(next(x for x in last if x.startswith("MODEL") and "REQ/S" in x))
        alpha = last[header + 1].split()
        assert alpha[0] == "alpha" and float(alpha[1]) > 0 and alpha[2] == "0.0", last
    finally:
        sup.stop()
