"""Engine reaper: kills every engine group the supervisor leaves behind (stdlib only, a script).

    python -I -S reaper.py --grace S     (stdin: a pipe from the supervisor)

The supervisor starts one reaper in its own session and writes `+PGID` / `-PGID` lines as
engine groups come and go. When stdin reaches EOF — the supervisor exited, however it died,
since the kernel closes its end of the pipe — the reaper sends SIGTERM to every group still
registered, waits up to `--grace` seconds for them to empty, SIGKILLs what is left, and exits.
Engines are spawned directly (no per-engine helper), so this costs nothing at start time.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _signal(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_groups(groups: set[int], grace: float) -> None:
    alive = {g for g in groups if _signal(g, signal.SIGTERM)}
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {g for g in alive if _signal(g, 0)}
    for g in alive:
        _signal(g, signal.SIGKILL)


def main(argv: list[str]) -> int:
    grace = float(argv[argv.index("--grace") + 1]) if "--grace" in argv else 10.0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the supervisor's job
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only EOF ends us: the groups must be reaped
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        text = line.strip().decode("ascii", "replace")
        if len(text) > 1 and text[1:].isdigit():
            pgid = int(text[1:])
            if text[0] == "+":
                groups.add(pgid)
            elif text[0] == "-":
                groups.discard(pgid)
    kill_groups(groups, grace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
