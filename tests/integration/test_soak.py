"""The soak's smoke (`bench/soak.py`, issue 31): two minutes of the same mixed traffic through
a real gateway and supervisor on fake engines, sampled every 5 s (its traffic keeps a core
busy, so the smoke is short; the 30-minute soak is `python -m bench.soak`).

Asserts what holds on a busy 2-core machine whatever its speed: no request failed (every
status is the one its kind asks for: 200, 429 for the rate-limited key, 401 for a wrong one),
every bounded map at or under its bound in every sample, FDs and tasks of both processes flat
between the quiet samples (traffic paused, nothing in flight) after warm-up and at the end, and
an RSS slope far above the 30-minute goal (1 MB per 10 minutes) but far below a leak of a
request's worth per request. Then the soak is signalled (SIGTERM) mid-run and every process it
started must be gone. Free ports and temporary folders only: it runs beside other tests.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from bench.soak import SoakOptions, run_soak, write
from tests.conftest import REPO_ROOT, wait_until
from tests.integration.test_bench_stops import alive  # running, not a zombie

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FD_SLACK = 6  # a probe's or sync's connection open at one quiet sample and not the other
TASK_SLACK = 5  # a health probe, a sync, a KV feed's read in flight at one quiet sample
RSS_MB_PER_10MIN = 100.0  # two minutes on a busy machine: the allocator still settles
EXPECTED = {
    "limited": {"200", "429"},
    "wrong_key": {"401"},
}


def test_two_minutes_of_mixed_traffic_leave_fds_tasks_and_maps_flat(tmp_path: Path) -> None:
    opts = SoakOptions(
        minutes=2, interval_s=5, warmup_s=40, workers=1, batch_every_s=25, swap_every_s=25
    )
    report = run_soak(opts)
    write(report, tmp_path, "soak-smoke")  # figures beside a failure (pytest's tmp_path)
    summary = {k: report[k] for k in ("run", "series", "quiet", "maps", "outcomes")}

    for outcome, count in report["outcomes"].items():
        kind, _, status = outcome.rpartition(" ")
        if kind in ("batch", "swap swap-a", "swap swap-b"):
            assert status in ("completed", "200"), (outcome, count, summary)
        else:
            assert status in EXPECTED.get(kind, {"200"}), (outcome, count, summary)
    assert report["run"]["batches"] >= 2 and report["run"]["swaps"] >= 2, summary

    assert report["maps"], summary
    for name, held in report["maps"].items():
        assert held["within"], (name, held, summary)
    # The maps the traffic fills were filled (the 30-minute soak shows them held at their caps).
    for used in ("gateway.responses.stored", "gateway.balancing.chat", "gateway.kv.index"):
        assert report["maps"][used]["max_size"] > 0, summary

    for proc, quiet in report["quiet"].items():
        (fds_start, fds_end), (tasks_start, tasks_end) = quiet["fds"], quiet["tasks"]
        assert fds_end <= fds_start + FD_SLACK, (proc, quiet, summary)
        assert tasks_end <= tasks_start + TASK_SLACK, (proc, quiet, summary)
        rss = report["series"][proc]["rss_mb"]["slope_per_10min"]
        assert rss is not None and rss <= RSS_MB_PER_10MIN, (proc, rss, summary)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _at_least(n: int, procs: list[psutil.Process]) -> list[psutil.Process]:
    return procs if len(procs) >= n else []


def _serving(procs: list[psutil.Process]) -> bool:
    """The gateway is up (the last process the soak's stack starts)."""
    for proc in procs:
        try:
            if "orchestra.gateway" in proc.cmdline():
                return True
        except psutil.Error:
            pass
    return False


def test_sigterm_stops_everything_the_soak_started(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench.soak", "--minutes", "10", "--interval", "2"]
    argv += ["--workers", "1", "--out", str(tmp_path)]
    log = (tmp_path / "soak.log").open("wb")
    soak = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    seen: list[psutil.Process] = []
    try:
        wait_until(lambda: _serving(_descendants(soak.pid)), 90, 0.2, "the soak's gateway")
        # engines (4 static + the managed one), the supervisor, the gateway
        seen = wait_until(lambda: _at_least(7, _descendants(soak.pid)), 60, 0.2, "7 children")
        soak.send_signal(signal.SIGTERM)
        assert soak.wait(90) == 128 + signal.SIGTERM
        wait_until(lambda: not alive(seen), 60, 0.2, "every process of the soak gone")
    finally:
        if soak.poll() is None:
            soak.kill()
            soak.wait()
        for proc in alive(seen):  # a failed test still leaves nothing behind
            proc.kill()
        log.close()
    assert "Traceback" not in (tmp_path / "soak.log").read_text(errors="replace")
