"""Engine watchdog: the leader of each engine's process group (stdlib only, run as a script).

    python -I -S watchdog.py --parent PID --grace S -- ENGINE ARGV...

The supervisor starts this in a new session; it forks the engine into the same process group and
waits. If the supervisor dies (even by SIGKILL), PR_SET_PDEATHSIG wakes it (and a 1 s getppid poll
backs that up): it sends SIGTERM to the whole group (engine and its worker grandchildren), waits
`--grace` seconds, then SIGKILLs the group, itself included. Otherwise it exits with the engine's
status (128+N when the engine died of signal N). SIGTERM from the supervisor reaches the engine
through the group; a SIGTERM sent to this pid alone by someone else is forwarded to the engine.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
WATCHED = {signal.SIGCHLD, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def _set_parent_death_signal(sig: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the getppid poll still works
        pass


def _status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _reap(pid: int) -> int | None:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    return _status(status) if done == pid else None


def _kill_group_and_exit(pid: int, grace: float) -> None:
    """The supervisor is gone: stop the engine and every process in our group."""
    pgid = os.getpgid(0)
    try:
        os.killpg(pgid, signal.SIGTERM)  # SIGTERM is blocked here, so we stay up to follow up
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while _reap(pid) is None and time.monotonic() < deadline:
        signal.sigtimedwait([signal.SIGCHLD], max(0.01, min(0.1, deadline - time.monotonic())))
    os.killpg(pgid, signal.SIGKILL)  # grandchildren too; this kills us as well
    os._exit(137)


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: watchdog.py --parent PID --grace S -- ARGV...", file=sys.stderr)
        return 2
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1 :]
    parent = int(opts[opts.index("--parent") + 1])
    grace = float(opts[opts.index("--grace") + 1])
    if not command:
        print("watchdog: empty engine command", file=sys.stderr)
        return 2

    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    _set_parent_death_signal(signal.SIGUSR1)
    pid = os.fork()
    if pid == 0:  # the engine: default signal mask, same process group as the watchdog
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"watchdog: cannot execute {command[0]!r}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)

    if os.getppid() != parent:  # the supervisor died before prctl took effect
        _kill_group_and_exit(pid, grace)
    while True:
        info = signal.sigtimedwait(WATCHED, 1.0)
        code = _reap(pid)
        if code is not None:
            return code
        if info is None:
            if os.getppid() != parent:
                _kill_group_and_exit(pid, grace)
            continue
        if os.getppid() != parent:  # PR_SET_PDEATHSIG (SIGUSR1) arrives after reparenting
            _kill_group_and_exit(pid, grace)
        elif info.si_signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            if info.si_pid != parent:  # the supervisor signals the group; others only us
                os.kill(pid, info.si_signo)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
