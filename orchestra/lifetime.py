"""A child process's lifetime bound to its parent's: the one parent-death watch.

The kernel does the watching (Linux `prctl(PR_SET_PDEATHSIG)`): when the parent dies, even by
SIGKILL, the child gets `sig` and shuts down as it would on that signal. `spawn` sets it on
every child it starts: `orchestra up`'s supervisor and gateway, and every process the tests and
the bench start (their fake and real engines, gateways, nginx); each gateway worker sets it on
itself at start (`gateway/workers.py`, given its parent's pid). The supervisor's engines have
their own guarantees (`supervisor/procgroup.py`: they may outlive it, to be adopted).

`spawn` and `stop_group` are the one way to start and stop such a child: its own session (one
`killpg` reaches it and whatever it forks), SIGTERM to the group, a deadline, SIGKILL to the
group.

Two limits of the kernel's watch, both handled or noted here:
- a parent that died before the watch was set is not signalled: the child checks, right after
  setting it, that its parent is still `parent`, and signals itself if not;
- the signal follows the death of the parent's *thread* that forked the child, so parents
  spawn from their main thread; `spawn` sets the watch only when called from it (a child of a
  worker thread would die with that thread).
Where prctl is unavailable (not Linux) there is no watch; the engines need Linux anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """In the child: get `sig` when the process `parent` (the pid that started this one) dies;
    at once if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:  # reparented: the parent died before the watch was set
        os.kill(os.getpid(), sig)


def dies_with_this_process(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child gets `sig` when this process dies."""
    return functools.partial(die_with_parent, os.getpid(), sig)


def spawn(
    argv: Sequence[str],
    *,
    stdout: IO[bytes] | int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """`argv` in its own session, bound to this process's life (it gets `death_signal` when
    this process dies); stderr goes with stdout."""
    main = threading.current_thread() is threading.main_thread()
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        env=None if env is None else dict(env),
        start_new_session=True,
        preexec_fn=dies_with_this_process(death_signal) if main else None,
    )


def stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM to the child's group, up to `grace_s` for the leader to exit, then SIGKILL to the
    group (what the leader left behind too); the leader's exit status."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()
