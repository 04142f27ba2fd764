"""Background loops that survive their own errors: the one restart-on-failure loop.

`run_forever` keeps a long-running loop alive (restarted `restart_delay_s` after it fails or
returns); `every` runs one step on a fixed period (a failed step is logged and the next one runs
on time). Both log with the loop's name and let cancellation through: cancelling the task is how
their owner stops them. Delays are always given by the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_forever(
    name: str, loop: Callable[[], Awaitable[None]], restart_delay_s: float
) -> None:
    """Run `loop()`; when it raises (or returns), log it and start it again after
    `restart_delay_s`. Returns only by cancellation."""
    while True:
        try:
            await loop()
        except Exception:  # CancelledError is not an Exception: it ends the loop
            log.exception("background task %s failed; restarting it", name)
        else:
            log.warning("background task %s returned; restarting it", name)
        await asyncio.sleep(restart_delay_s)


async def every(
    name: str, interval_s: float, step: Callable[[], Awaitable[object]], first_after_s: float
) -> None:
    """Run `step()` after `first_after_s`, then `interval_s` after the end of each run; a step
    that raises is logged and the schedule goes on. Returns only by cancellation."""
    await asyncio.sleep(first_after_s)
    while True:
        try:
            await step()
        except Exception:  # one bad step must not end the loop for good
            log.exception("%s failed", name)
        await asyncio.sleep(interval_s)
