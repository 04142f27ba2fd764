"""`orchestra top` and `orchestra logs -f`: loops that redraw or print until Ctrl-C.

The HTTP calls are handed in as coroutine functions (the CLI owns its clients), so these loops
only poll, compute and draw. Each loop runs in one event loop (`run_until_interrupted`): Ctrl-C
cancels it wherever it waits, an HTTP call as much as a sleep, and it ends at once. (One
`asyncio.run` per poll, as before, left moments where a Ctrl-C could be lost.)
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.live import Live

from orchestra.cli.status_view import top_view
from orchestra.rates import RateWindow, from_text

# Rates span this much history: smooth enough to read, recent enough to follow a change.
TOP_WINDOW_S = 10.0


class Unreachable(Exception):
    """A poll failed; the loop shows it and tries again next tick."""


def run_until_interrupted(view: Callable[[Callable[[], bool]], Awaitable[int]]) -> int:
    """Run a view loop in one event loop until it ends or Ctrl-C (SIGINT), then exit 0.

    `view(interrupted)` gets the check its loop makes each round. SIGINT cancels the loop at
    whatever it awaits (an HTTP call, a sleep) and sets `interrupted`, so even a cancellation
    some library swallowed ends it at its next round.
    """

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        interrupted = asyncio.Event()

        def on_sigint() -> None:
            interrupted.set()
            if task is not None:
                task.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return await view(interrupted.is_set)
        except (asyncio.CancelledError, Exception):
            if interrupted.is_set():  # whatever the cancellation became on its way out
                return 0
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:  # a SIGINT before the handler is in place
        return 0


async def run_top(
    console: Console,
    get_models: Callable[[], Awaitable[Sequence[Mapping[str, Any]]]],
    get_metrics: Callable[[], Awaitable[str]],
    interval_s: float,
    count: int = 0,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Redraw the model table and per-model rates every `interval_s` until `stop()` (or `count`
    redraws, when > 0). The model table is required; the gateway's rates are optional."""
    window = RateWindow(TOP_WINDOW_S)
    drawn = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while not stop():
            models = await get_models()  # an unreachable supervisor ends top with its message
            rates: dict[str, dict[str, float | None]] | None
            note = ""
            try:
                window.add(from_text(await get_metrics()))
                rates = {name: r.as_dict() for name, r in window.rates().items()}
            except Unreachable as exc:
                rates, note = None, str(exc)
            live.update(top_view(models, rates, note, console.width), refresh=True)
            drawn += 1
            if count and drawn >= count:
                return 0
            await asyncio.sleep(interval_s)
    return 0


async def follow_logs(
    console: Console,
    get_logs: Callable[[int | None], Awaitable[tuple[list[str], int]]],
    lines: int,
    interval_s: float,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Print the last `lines` lines, then every new line as it is written, polling every
    `interval_s` until `stop()`. `get_logs(None)` is the tail; `get_logs(offset)` the lines
    after `offset`; both return the offset to read from next."""
    tail, offset = await get_logs(None)
    for line in tail[-lines:] if lines else []:
        console.out(line, highlight=False)
    while not stop():
        await asyncio.sleep(interval_s)
        new, offset = await get_logs(offset)
        for line in new:
            console.out(line, highlight=False)
    return 0
