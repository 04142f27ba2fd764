"""A process's runtime figures (`GET /admin/runtime` on the gateway and on the supervisor): its
asyncio tasks, the objects the garbage collector tracks, and each bounded map's size beside its
bound, as the map's owner reports it.

Memory over time is read from outside (RSS, open FDs: `/proc`, psutil, `bench/soak.py`); what
only the process itself can see is here. Every map keyed by something clients choose or engines
report has an owner that caps it; the owner says how full it is (`Bounded`), and the soak checks
`size <= bound` for each, every sample.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Bounded:
    """One map's entries now and the most it may hold."""

    size: int
    bound: int

    @property
    def within(self) -> bool:
        return self.size <= self.bound

    def __add__(self, other: Bounded) -> Bounded:
        return Bounded(self.size + other.size, self.bound + other.bound)


def figures(maps: Mapping[str, Bounded]) -> dict[str, Any]:
    """The runtime figures of the calling process (run on its event loop).

    `gc_objects` walks the collector's lists: a few ms per 100k objects, fine for an admin
    call every few seconds, not for a request path."""
    return {
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "gc_objects": len(gc.get_objects()),
        "maps": {name: {"size": b.size, "bound": b.bound} for name, b in sorted(maps.items())},
    }
