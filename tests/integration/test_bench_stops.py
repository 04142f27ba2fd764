"""`python -m bench` stops what it starts however it ends: SIGTERM (`timeout 390 make bench`)
unwinds every leg; SIGKILL leaves its children to the kernel's parent-death signal.

The bench runs a long sweep point (fake upstream, gateway, load generator); once the load
generator is running, the bench is signalled, and every process it had started must be gone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _is_load_generator(proc: psutil.Process) -> bool:
    try:
        return "bench.load" in proc.cmdline()
    except psutil.Error:
        return False


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The ones still running (a zombie waiting for its reaper counts as gone)."""
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_bench_leaves_nothing_behind(sig: signal.Signals, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "--concurrency", "4", "--duration", "120"]
    argv += ["--rounds", "1", "--modes", "nonstream", "--no-wrk", "--no-pin"]
    argv += ["--out-dir", str(tmp_path)]
    log = (tmp_path / "bench.log").open("wb")
    bench = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seen: list[psutil.Process] = []
    try:
        wait_until(
            lambda: any(_is_load_generator(p) for p in _descendants(bench.pid)),
            timeout=90,
            what="the bench's load generator running",
        )
        seen = _descendants(bench.pid)  # fake upstream, gateway (+ its workers), load generator
        assert len(seen) >= 3, [p.cmdline() for p in seen]
        bench.send_signal(sig)
        code = bench.wait(60)
        assert code == (128 + sig if sig == signal.SIGTERM else -sig), code
        wait_until(lambda: not alive(seen), timeout=60, what="every bench child gone")
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for proc in alive(seen):  # a failed test still leaves nothing behind
            proc.kill()
        log.close()
    if sig == signal.SIGTERM:  # an orderly stop, not a crash
        assert "Traceback" not in (tmp_path / "bench.log").read_text(errors="replace")
