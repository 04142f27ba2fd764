"""The cost model: the expected wait of each way to serve a model's next request, from measured
history, and the one choice among them.

The ways: queue at a ready replica (its outstanding requests, spread over the ready replicas,
times the measured time per request), wait for a replica already starting (its expected start
less the time it has been at it), wake a sleeping replica (the median of the model's measured
wakes), or start a cold one (the median of its measured starts, kept apart for a warm and a
cold page cache). `choose` takes the least expected wait; ties go ready < starting < wake <
cold, so a wake is preferred over a cold start and a cold replica is never started when a ready
one serves sooner. An unmeasured wait counts as 0 for a replica that is ready or starting (no
evidence: bring nothing more up), as the measured cold start for a wake (a wake reloads weights
from host RAM: never slower than a start), else as longer than every measured wait.
Every history is bounded: the last `cost_history` figures per model and kind.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import IntEnum

from .states import EngineState

S = EngineState


class Way(IntEnum):
    """How a request gets served; the value is the tie-break rank (lower wins)."""

    READY = 0
    STARTING = 1
    WAKE = 2
    COLD = 3


@dataclass(frozen=True)
class Option:
    way: Way
    expected_s: float | None  # None: never measured (ranked after every measured option)
    engine: str = ""  # the engine id this way uses ("" for the ready queue)


def choose(options: list[Option]) -> Option | None:
    """The option with the least expected wait (unknown: see the module's note); ties by rank."""
    if not options:
        return None
    colds = [o.expected_s for o in options if o.way is Way.COLD and o.expected_s is not None]
    cold = min(colds) if colds else None

    # A wake never takes longer than a start (the weights come from host RAM): an unmeasured
    # one is expected to take at most the measured start.
    bounded = [
        replace(o, expected_s=cold) if o.way is Way.WAKE and o.expected_s is None else o
        for o in options
    ]
    return min(
        bounded,
        key=lambda o: (o.expected_s is None and o.way >= Way.WAKE, o.expected_s or 0.0, o.way),
    )


class History:
    """The last `size` measurements; their median (robust to one slow outlier)."""

    def __init__(self, size: int) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(max(0.0, seconds))

    def median(self) -> float | None:
        return statistics.median(self._values) if self._values else None

    def __len__(self) -> int:
        return len(self._values)


class _ServiceRate:
    """Little's law over recent gateway reports: mean requests in flight over requests per
    second gives the mean time a request spends at the engines (queue + service)."""

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=size)  # (t, inflight, new)
        self._clock = clock

    def add(self, inflight: int, new_requests: int) -> None:
        self._samples.append((self._clock(), inflight, new_requests))

    def seconds_per_request(self) -> float | None:
        if len(self._samples) < 2:
            return None
        span = self._samples[-1][0] - self._samples[0][0]
        arrivals = sum(n for _, _, n in list(self._samples)[1:])
        if span <= 0 or arrivals <= 0:
            return None
        mean_inflight = statistics.fmean(i for _, i, _ in self._samples)
        return mean_inflight / (arrivals / span)


class CostModel:
    """Measured start, wake and service times per model (one owner: the manager)."""

    def __init__(self, history: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = history
        self._clock = clock
        self._starts: dict[tuple[str, bool], History] = {}
        self._wakes: dict[str, History] = {}
        self._service: dict[str, _ServiceRate] = {}

    def record_start(self, model: str, seconds: float, warm_cache: bool) -> None:
        self._starts.setdefault((model, warm_cache), History(self._size)).add(seconds)

    def record_wake(self, model: str, seconds: float) -> None:
        self._wakes.setdefault(model, History(self._size)).add(seconds)

    def record_load(self, model: str, inflight: int, new_requests: int) -> None:
        rate = self._service.get(model)
        if rate is None:
            rate = self._service[model] = _ServiceRate(4 * self._size, self._clock)
        rate.add(inflight, new_requests)

    def start_s(self, model: str, warm_cache: bool) -> float | None:
        """The expected cold start: this cache state's history, else the other's."""
        for key in ((model, warm_cache), (model, not warm_cache)):
            if (h := self._starts.get(key)) is not None and len(h):
                return h.median()
        return None

    def wake_s(self, model: str) -> float | None:
        h = self._wakes.get(model)
        return h.median() if h is not None else None

    def service_s(self, model: str) -> float | None:
        rate = self._service.get(model)
        return rate.seconds_per_request() if rate is not None else None

    def queue_s(self, model: str, outstanding: int, ready: int) -> float | None:
        """A new request's wait at the ready replicas: 0 when they are idle, else the
        outstanding requests spread over them times the measured time per request."""
        if ready <= 0:
            return None
        if outstanding <= 0:
            return 0.0
        service = self.service_s(model)
        return None if service is None else outstanding / ready * service


@dataclass(frozen=True)
class EngineView:
    """What the choice needs of one engine."""

    id: str
    state: EngineState
    starting_for_s: float | None = None


def options(
    costs: CostModel, model: str, engines: list[EngineView], outstanding: int, warm_cache: bool
) -> list[Option]:
    """Every way to serve `model`'s next request now, with its expected wait."""
    out: list[Option] = []
    ready = sum(1 for e in engines if e.state is S.READY)
    if ready:
        out.append(Option(Way.READY, costs.queue_s(model, outstanding, ready)))
    start = costs.start_s(model, warm_cache)
    for e in engines:
        if e.state is S.STARTING:
            left = None if start is None else max(0.0, start - (e.starting_for_s or 0.0))
            out.append(Option(Way.STARTING, left, e.id))
        elif e.state is S.SLEEPING:
            out.append(Option(Way.WAKE, costs.wake_s(model), e.id))
        elif e.state is S.COLD:
            out.append(Option(Way.COLD, start, e.id))
    return out
