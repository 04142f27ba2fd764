"""CPU seconds of a process group from /proc: the gateway's cost per request or per relayed
chunk, a figure a shared, noisy machine moves far less than wall-clock req/s."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pgid: int) -> float:
    """user+sys CPU seconds of every live process in the process group `pgid` (the gateway's
    workers stay in their parent's group, gateway/workers.py, so they are counted too)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
