"""`gateway.workers: 2`: two processes on one port, merged /metrics, a dead worker restarted."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestra.gateway.workers import _QUICK_EXIT_S
from tests.conftest import GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(240)

PATH = "/v1/completions"
BODY = {"model": "w", "prompt": "x", "max_tokens": 1}


@contextlib.contextmanager
def _started(gw: GatewayProcess) -> Iterator[GatewayProcess]:
    """Three processes to start on a busy 2-core machine: a longer start deadline."""
    gw.start(timeout=90.0)
    try:
        gw.wait_workers(2)
        yield gw
    finally:
        gw.stop()


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


def test_two_workers_share_the_port_and_the_metrics() -> None:
    with FakeEngineProcess("--served-model-name", "w", name="w") as engine:
        config = {
            "gateway": fast_gateway_section(free_port(), workers=2),
            "servers": [{"name": "w", "url": engine.url}],
            "batch": {"enabled": False},  # the Batch API keeps the gateway to one process
        }
        with GatewayProcess(config) as gw:
            assert gw.proc is not None
            workers = wait_until(
                lambda: len(_children(gw.proc.pid)) == 2 and _children(gw.proc.pid)
            )
            for _ in range(40):  # a new connection each: the kernel spreads them
                assert httpx.post(gw.url + PATH, json=BODY, timeout=10).status_code == 200
            # Request ids carry a per-process prefix: both workers served some.
            prefixes = {r["x_request_id"][:16] for r in engine.stats()["records"]}
            assert len(prefixes) == 2
            # Any worker's /metrics counts every worker's requests.
            for _ in range(4):
                assert gw.metric("orchestra_requests_total", model="w", status="200") == 40

            # A worker that dies is replaced; the port keeps answering. (One that dies within
            # _QUICK_EXIT_S of its start counts as failing to start and stops the gateway: on a
            # fast machine the 40 requests above can take less than that.)
            wait_until(
                lambda: _age_s(workers[0]) > _QUICK_EXIT_S,
                timeout=_QUICK_EXIT_S + 5,
                interval=0.1,
                what="the worker past its start window",
            )
            os.kill(workers[0], signal.SIGKILL)
            wait_until(
                lambda: len(kids := _children(gw.proc.pid)) == 2 and workers[0] not in kids,
                timeout=90,
                what="worker restarted",
            )
            gw.wait_workers(3)  # the replacement is serving too
            for _ in range(10):
                assert httpx.post(gw.url + PATH, json=BODY, timeout=10).status_code == 200
            final = _children(gw.proc.pid)
        assert gw.proc.returncode == 0
        assert all(_gone(pid) for pid in final)  # the workers went with the parent


def _age_s(pid: int) -> float:
    """Seconds since the process started (from /proc)."""
    started_ticks = int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[19])
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    return uptime_s - started_ticks / os.sysconf("SC_CLK_TCK")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workers_leave_when_the_parent_is_killed() -> None:
    config = {
        "gateway": fast_gateway_section(free_port(), workers=2),
        "servers": [{"name": "w", "url": f"http://127.0.0.1:{free_port()}"}],
        "batch": {"enabled": False},
    }
    with _started(GatewayProcess(config)) as gw:
        assert gw.proc is not None
        workers = wait_until(lambda: len(_children(gw.proc.pid)) == 2 and _children(gw.proc.pid))
        gw.proc.send_signal(signal.SIGKILL)  # the parent only: no chance to stop them
        gw.proc.wait()
        wait_until(lambda: all(_gone(pid) for pid in workers), timeout=60, what="workers gone")
