"""Per-model demand as the gateway reports it: request counts over a window, in-flight, last use."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping


class Demand:
    def __init__(
        self,
        window_s: float,
        inflight_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window_s
        self._ttl = inflight_ttl_s
        self._clock = clock
        self._events: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._inflight: dict[str, tuple[float, int]] = {}
        self._last_used: dict[str, float] = {}
        self._ensured: dict[str, float] = {}

    def record(self, counts: Mapping[str, int], inflight: Mapping[str, int] | None = None) -> None:
        """Add request-count deltas (and the latest in-flight numbers) reported now."""
        now = self._clock()
        for model, n in counts.items():
            if n > 0:
                self._events[model].append((now, n))
                self._last_used[model] = now
        for model, n in (inflight or {}).items():
            self._inflight[model] = (now, max(0, n))
            if n > 0:
                self._last_used[model] = now

    def touch(self, model: str) -> None:
        """The model was just asked for (an ensure): it counts as recently used."""
        self._last_used[model] = self._clock()

    def ensured(self, model: str) -> None:
        """An ensure just returned `model` READY to a caller whose requests are on their way."""
        now = self._clock()
        self._last_used[model] = now
        self._ensured[model] = now

    def seconds_since_ensured(self, model: str) -> float:
        return self._clock() - self._ensured.get(model, float("-inf"))

    def count(self, model: str) -> int:
        """Requests for `model` within the window."""
        events = self._events.get(model)
        if not events:
            return 0
        horizon = self._clock() - self._window
        while events and events[0][0] < horizon:
            events.popleft()
        return sum(n for _, n in events)

    def inflight(self, model: str) -> int:
        at, n = self._inflight.get(model, (0.0, 0))
        return n if self._clock() - at <= self._ttl else 0

    def last_used(self, model: str) -> float:
        """Monotonic time of the last use, or -inf when never used."""
        return self._last_used.get(model, float("-inf"))

    def seconds_since_use(self, model: str) -> float | None:
        at = self._last_used.get(model)
        return None if at is None else self._clock() - at
