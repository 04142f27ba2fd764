"""The console's charts over time: per model, a bounded ring of per-interval aggregates (no
Prometheus needed), and the swap markers.

Each model's ring holds `window_s / step_s` intervals (10 s over an hour: 360). A slot is
stamped with the interval it holds (`int(now // step_s)`); a writer that finds an older stamp
clears the slot first, so a slot is reused after one window and a reader skips every slot whose
stamp is outside the window: nothing expires on a timer. Writers are the existing single
counting points (`ModelMetrics` in metrics.py): an answer, a first byte, a reply's usage; each
costs one clock read, a division, a compare and an integer add or two.

TTFT keeps no values: each slot counts first-byte times in fixed geometric bins (2^(1/3) apart,
1 ms to ~260 s), and p50/p95 are read as the geometric middle of the bin the rank falls in
(within ~12 % of the exact figure). Per model: slots x 56 bins of 4-byte counts (80 KB for the
default hour).

Bounds: the models are the names `GatewayMetrics.model` is called with, which are configured
names by its own invariant (metrics.py); `max_models` is a safety net past which names share
`_other`. Markers are a deque of at most `max_markers` and a reader drops those older than the
window. Each gateway worker keeps its own rings (like the console's live rates).
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from orchestra.runtime import Bounded

OTHER_MODEL = "_other"
TTFT_BASE_S = 0.001  # the first bin's upper edge
_PER_OCTAVE = 3  # bins per doubling: edges 2^(1/3) apart
TTFT_BINS = 56  # bin 0 is below 1 ms, bin 55 is above ~262 s
_TOP = TTFT_BINS - 1
_UNREPORTED = "unknown"  # a managed route before the supervisor's first answer: no marker


def ttft_bin(seconds: float) -> int:
    """The histogram bin of one first-byte time."""
    if seconds < TTFT_BASE_S:
        return 0
    return min(_TOP, 1 + int(math.log2(seconds / TTFT_BASE_S) * _PER_OCTAVE))


def bin_value(index: int) -> float:
    """What a bin reads as: the geometric middle of its edges (the edge for the end bins)."""
    if index == 0:
        return TTFT_BASE_S
    low = TTFT_BASE_S * 2 ** ((index - 1) / _PER_OCTAVE)
    if index == _TOP:
        return low
    return low * 2 ** (0.5 / _PER_OCTAVE)


_BIN_VALUES = tuple(round(bin_value(i), 4) for i in range(TTFT_BINS))


def quantiles(counts: array[int], start: int, total: int) -> tuple[float, float]:
    """p50 and p95 of the `total` (> 0) times counted in `counts[start:start + TTFT_BINS]`:
    the first bin whose running count reaches the rank (accumulate and bisect run in C)."""
    running = list(accumulate(counts[start : start + TTFT_BINS]))
    p50 = bisect_left(running, 0.5 * total)
    p95 = bisect_left(running, 0.95 * total)
    return _BIN_VALUES[min(p50, _TOP)], _BIN_VALUES[min(p95, _TOP)]


class ModelSeries:
    """One model's ring. Slot i holds interval `stamps[i]`; every array is indexed by slot."""

    __slots__ = (
        "_clock",
        "_size",
        "_step",
        "errors",
        "limited",
        "quantiles",
        "requests",
        "stamps",
        "tokens",
        "ttft",
        "ttft_count",
    )

    def __init__(self, clock: Callable[[], float], step_s: float, size: int) -> None:
        self._clock = clock
        self._step = step_s
        self._size = size
        self.stamps = [-1] * size
        self.requests = [0] * size
        self.errors = [0] * size  # status >= 500
        self.limited = [0] * size  # status 429
        self.tokens = [0] * size  # completion tokens
        self.ttft_count = [0] * size
        self.ttft = array("I", bytes(4 * size * TTFT_BINS))  # slot * TTFT_BINS + bin
        # (interval, p50, p95) read for a finished interval: its bins no longer change
        self.quantiles: list[tuple[int, float, float] | None] = [None] * size

    def _slot(self) -> int:
        tick = int(self._clock() // self._step)
        slot = tick % self._size
        if self.stamps[slot] != tick:  # an interval a window ago (or never): start afresh
            self.stamps[slot] = tick
            self.requests[slot] = self.errors[slot] = self.limited[slot] = 0
            self.tokens[slot] = self.ttft_count[slot] = 0
            base = slot * TTFT_BINS
            self.ttft[base : base + TTFT_BINS] = array("I", bytes(4 * TTFT_BINS))
        return slot

    def answered(self, status: int) -> None:
        slot = self._slot()
        self.requests[slot] += 1
        if status >= 500:
            self.errors[slot] += 1
        elif status == 429:
            self.limited[slot] += 1

    def first_byte(self, seconds: float) -> None:
        slot = self._slot()
        self.ttft_count[slot] += 1
        self.ttft[slot * TTFT_BINS + ttft_bin(seconds)] += 1

    def completion_tokens(self, count: int) -> None:
        self.tokens[self._slot()] += count

    def columns(self, first: int, last: int, now: float) -> dict[str, list[float | None]]:
        """Per-second rates and TTFT quantiles for intervals `first..last` (the current one is
        divided by the part of it that has passed, at least a second). Written for a reader
        on the event loop: one pass per column, the held slots found once."""
        ticks = range(first, last + 1)
        stamps, size = self.stamps, self._size
        # the slot of each interval in the window, or -1 where the slot holds another interval
        slots = [slot if stamps[slot] == t else -1 for t in ticks for slot in (t % size,)]
        step = self._step
        span = min(step, max(1.0, now - last * step))  # the current interval's part so far
        out: dict[str, list[float | None]] = {}
        for name, counts in (
            ("requests_per_s", self.requests),
            ("errors_per_s", self.errors),
            ("limited_per_s", self.limited),
            ("tokens_per_s", self.tokens),
        ):
            column: list[float | None] = [
                counts[s] / step if s >= 0 and counts[s] else 0.0 for s in slots
            ]
            column[-1] = round(counts[slots[-1]] / span, 3) if slots[-1] >= 0 else 0.0
            out[name] = column
        p50s: list[float | None] = []
        p95s: list[float | None] = []
        for t, s in zip(ticks, slots, strict=True):
            total = self.ttft_count[s] if s >= 0 else 0
            if not total:
                p50s.append(None)
                p95s.append(None)
                continue
            held = self.quantiles[s]
            if held is None or held[0] != t:
                held = (t, *quantiles(self.ttft, s * TTFT_BINS, total))
                if t != last:  # still counting: read again next time
                    self.quantiles[s] = held
            p50s.append(held[1])
            p95s.append(held[2])
        out["ttft_p50_s"], out["ttft_p95_s"] = p50s, p95s
        return out


@dataclass(frozen=True, slots=True)
class Marker:
    """A model's state as the gateway's routing table changed it (the supervisor's word, read
    on each sync; health for unmanaged models): `starting` is a swap in, `ready` its end."""

    at: float  # clock time
    model: str
    state: str
    was: str


class Series:
    """Every model's ring and the swap markers (one per gateway, built in its lifespan)."""

    def __init__(
        self,
        step_s: float = 10.0,
        window_s: float = 3600.0,
        *,
        max_models: int = 256,
        max_markers: int = 1000,
        clock: Callable[[], float] = time.time,  # wall time: the chart's axis is clock time
    ) -> None:
        self.step_s = step_s
        self.size = max(1, math.ceil(window_s / step_s))
        self.max_models = max_models
        self._clock = clock
        self._models: dict[str, ModelSeries] = {}
        self._markers: deque[Marker] = deque(maxlen=max_markers)
        self._states: dict[str, str] = {}  # the last state seen per model (markers)

    def model(self, name: str) -> ModelSeries:
        """The ring for `name` (made on first use; past `max_models` names share `_other`)."""
        found = self._models.get(name)
        if found is None:
            if len(self._models) >= self.max_models - 1 and name != OTHER_MODEL:
                return self.model(OTHER_MODEL)
            found = self._models[name] = ModelSeries(self._clock, self.step_s, self.size)
        return found

    def bounded(self) -> Bounded:
        return Bounded(len(self._models), self.max_models)

    def see_states(self, states: Mapping[str, str]) -> None:
        """Markers for the models whose state changed since the last call (a model's first
        sighting, or its first reported state after "unknown", is its baseline)."""
        now = self._clock()
        for name, state in states.items():
            was = self._states.get(name)
            if was is None and len(self._states) >= self.max_models:
                continue  # bounded like the rings
            self._states[name] = state
            if was is not None and was != state and was != _UNREPORTED:
                self._markers.append(Marker(now, name, state, was))

    async def follow(self, states: Callable[[], Mapping[str, str]], interval_s: float) -> None:
        """The marker loop: `states()` (the routing table's) every `interval_s`."""
        while True:
            self.see_states(states())
            await asyncio.sleep(interval_s)

    def snapshot(self) -> dict[str, Any]:
        """The charts' JSON: `t0` is the first interval's start, one value per `step_s`."""
        now = self._clock()
        last = int(now // self.step_s)
        first = last - self.size + 1
        since = first * self.step_s
        markers = [m for m in self._markers if m.at >= since]
        names = sorted(set(self._models) | {m.model for m in markers})
        empty = ModelSeries(self._clock, self.step_s, 1)  # reads as zeros: never written
        return {
            "step_s": self.step_s,
            "t0": since,
            "now": now,
            "models": {
                name: self._models.get(name, empty).columns(first, last, now) for name in names
            },
            "markers": [
                {"t": round(m.at, 3), "model": m.model, "state": m.state, "was": m.was}
                for m in markers
            ],
        }
