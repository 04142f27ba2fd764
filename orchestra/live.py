"""`orchestra top` and `orchestra logs -f`: loops that redraw or print until Ctrl-C.

The HTTP calls are handed in as functions (the CLI owns its client), so these loops only
poll, compute and draw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.live import Live

from orchestra.rates import RateWindow, from_text
from orchestra.status_view import top_view

# Rates span this much history: smooth enough to read, recent enough to follow a change.
TOP_WINDOW_S = 10.0


class Unreachable(Exception):
    """A poll failed; the loop shows it and tries again next tick."""


def run_top(
    console: Console,
    get_models: Callable[[], Sequence[Mapping[str, Any]]],
    get_metrics: Callable[[], str],
    interval_s: float = 1.0,
    count: int = 0,
) -> int:
    """Redraw the model table and per-model rates every `interval_s` until Ctrl-C (or `count`
    redraws, when > 0). The model table is required; the gateway's rates are optional."""
    window = RateWindow(TOP_WINDOW_S)
    drawn = 0
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                models = get_models()  # an Unreachable supervisor ends top with its message
                rates: dict[str, dict[str, float | None]] | None
                note = ""
                try:
                    window.add(from_text(get_metrics()))
                    rates = {name: r.as_dict() for name, r in window.rates().items()}
                except Unreachable as exc:
                    rates, note = None, str(exc)
                live.update(top_view(models, rates, note, console.width), refresh=True)
                drawn += 1
                if count and drawn >= count:
                    return 0
                time.sleep(interval_s)
    except KeyboardInterrupt:
        return 0


def follow_logs(
    console: Console,
    get_logs: Callable[[int | None], tuple[list[str], int]],
    lines: int,
    interval_s: float = 0.5,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Print the last `lines` lines, then every new line as it is written, until Ctrl-C.
    `get_logs(None)` is the tail; `get_logs(offset)` the lines after `offset`; both return the
    offset to read from next."""
    try:
        tail, offset = get_logs(None)
        for line in tail[-lines:] if lines else []:
            console.out(line, highlight=False)
        while not stop():
            time.sleep(interval_s)
            new, offset = get_logs(offset)
            for line in new:
                console.out(line, highlight=False)
    except KeyboardInterrupt:
        pass
    return 0
