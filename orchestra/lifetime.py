"""A child process's lifetime bound to its parent's: the one parent-death watch.

The kernel does the watching (Linux `prctl(PR_SET_PDEATHSIG)`): when the parent dies, even by
SIGKILL, the child gets `sig` and shuts down as it would on that signal. `orchestra up` sets it
on the supervisor and the gateway it starts (as `preexec_fn`), and each gateway worker sets it on
itself at start (`gateway/workers.py`, given its parent's pid).

Two limits of the kernel's watch, both handled or noted here:
- a parent that died before the watch was set is not signalled: the child checks, right after
  setting it, that its parent is still `parent`, and signals itself if not;
- the signal follows the death of the parent's *thread* that forked the child, so parents
  spawn from their main thread (both do).
Where prctl is unavailable (not Linux) there is no watch; the engines need Linux anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
from collections.abc import Callable

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
