"""Per-model demand as the gateways report it: request counts over a window, and last use.

Bound: per model at most `ceil(window_s) + 1` events, whoever reads them: reports within one
second of the model's last event are added to it, and events older than the window are dropped
as each report arrives (not only when a count is read, which nothing may do for hours).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping

from orchestra.runtime import Bounded

MERGE_S = 1.0  # reports this close to a model's last event are added to it


class Demand:
    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._events: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._last_used: dict[str, float] = {}

    def record(self, counts: Mapping[str, int]) -> None:
        """Add request-count deltas reported now."""
        now = self._clock()
        for model, n in counts.items():
            if n > 0:
                events = self._events[model]
                if events and now - events[-1][0] < MERGE_S:
                    events[-1] = (events[-1][0], events[-1][1] + n)
                else:
                    events.append((now, n))
                self._drop_old(events, now)
                self._last_used[model] = now

    def _drop_old(self, events: deque[tuple[float, int]], now: float) -> None:
        horizon = now - self._window
        while events and events[0][0] < horizon:
            events.popleft()

    def bounded(self, models: int) -> Bounded:
        """Events held over every model, against `models` models' worth of the bound."""
        per_model = math.ceil(self._window / MERGE_S) + 1
        return Bounded(sum(map(len, self._events.values())), models * per_model)

    def touch(self, model: str) -> None:
        """The model was just used (asked for by an ensure, or serving requests)."""
        self._last_used[model] = self._clock()

    def count(self, model: str) -> int:
        """Requests for `model` within the window."""
        events = self._events.get(model)
        if not events:
            return 0
        self._drop_old(events, self._clock())
        return sum(n for _, n in events)

    def last_used(self, model: str) -> float:
        """Monotonic time of the last use, or -inf when never used."""
        return self._last_used.get(model, float("-inf"))

    def seconds_since_use(self, model: str) -> float | None:
        at = self._last_used.get(model)
        return None if at is None else self._clock() - at
