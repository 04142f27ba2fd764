"""orchestra.lifetime: a child started with `dies_with_this_process()` ends when its parent dies,
even by SIGKILL, and one whose parent is already gone ends at once; `spawn`'s child gets the
death signal it was given (the Ray actor's supervisor: SIGUSR1, which leaves engines serving)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from .helpers import REPO_ROOT

_PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from orchestra.lifetime import dies_with_this_process
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        preexec_fn=dies_with_this_process(),
    )
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def _gone(pid: int, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def _parent(script: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`script` run as a parent that prints its child's pid first: (the parent, that pid);
    both are killed after the test, whatever it did."""
    parent = subprocess.Popen(
        [sys.executable, "-c", script, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = 0
    try:
        child = int(parent.stdout.readline())
        yield parent, child
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child and not _gone(child, 0):
            os.kill(child, signal.SIGKILL)
        parent.stdout.close()


def test_a_child_ends_when_its_parent_is_killed() -> None:
    with _parent(_PARENT) as (parent, child):
        assert not _gone(child, 0.3)  # alive while the parent is
        parent.send_signal(signal.SIGKILL)  # no chance to stop it
        parent.wait(10)
        assert _gone(child, 10)


_SPAWNING_PARENT = textwrap.dedent(
    """
    import signal, sys, time
    from orchestra.lifetime import spawn
    child = (
        "import signal, sys, time\\n"
        "def got(sig, frame):\\n"
        f"    open({sys.argv[1]!r}, 'w').write(signal.Signals(sig).name)\\n"
        "    sys.exit(0)\\n"
        "signal.signal(signal.SIGUSR1, got)\\n"
        "print('ready', flush=True)\\n"
        "time.sleep(120)\\n"
    )
    proc = spawn([sys.executable, "-c", child], stdout=-1, death_signal=signal.SIGUSR1)
    print(proc.pid, flush=True)
    print(proc.stdout.readline().decode().strip(), flush=True)  # its handler is installed
    time.sleep(120)
    """
)


def test_a_spawned_child_gets_its_death_signal(tmp_path: Path) -> None:
    marker = tmp_path / "signal"
    with _parent(_SPAWNING_PARENT, str(marker)) as (parent, child):
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _gone(child, 10)
        assert marker.read_text() == "SIGUSR1"


def test_a_child_whose_parent_is_already_gone_ends_at_once() -> None:
    # The "parent" named is not this process's parent: as if it died before the watch was set.
    code = "from orchestra.lifetime import die_with_parent; import time; "
    code += "die_with_parent(1, 15); time.sleep(60)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=30)
    assert proc.returncode == -signal.SIGTERM
