"""Per-model demand as the gateways report it: request counts over a window, and last use."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping


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
                self._events[model].append((now, n))
                self._last_used[model] = now

    def touch(self, model: str) -> None:
        """The model was just used (asked for by an ensure, or serving requests)."""
        self._last_used[model] = self._clock()

    def count(self, model: str) -> int:
        """Requests for `model` within the window."""
        events = self._events.get(model)
        if not events:
            return 0
        horizon = self._clock() - self._window
        while events and events[0][0] < horizon:
            events.popleft()
        return sum(n for _, n in events)

    def last_used(self, model: str) -> float:
        """Monotonic time of the last use, or -inf when never used."""
        return self._last_used.get(model, float("-inf"))

    def seconds_since_use(self, model: str) -> float | None:
        at = self._last_used.get(model)
        return None if at is None else self._clock() - at
