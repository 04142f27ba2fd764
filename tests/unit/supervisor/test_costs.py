"""The cost model (supervisor/costs.py): bounded histories, the expected wait of each way to serve
a request, and the one choice among ready / starting / sleeping / cold replicas."""

from __future__ import annotations

from orchestra.supervisor.costs import (
    CostModel,
    EngineView,
    History,
    Option,
    Way,
    choose,
    options,
)
from orchestra.supervisor.states import EngineState

S = EngineState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _measured(clock: Clock | None = None) -> CostModel:
    costs = CostModel(history=4, clock=clock or Clock())
    for s in (20.0, 22.0, 21.0):
        costs.record_start("m", s, warm_cache=True)
    for s in (60.0, 62.0):
        costs.record_start("m", s, warm_cache=False)
    for s in (1.0, 1.2, 0.9):
        costs.record_wake("m", s)
    return costs


def _loaded(costs: CostModel, clock: Clock, inflight: int, per_s: int) -> None:
    """Ten reports a second apart: `inflight` in flight, `per_s` new requests each."""
    for _ in range(10):
        costs.record_load("m", inflight, per_s)
        clock.now += 1.0


def test_history_is_bounded_and_its_median_resists_an_outlier() -> None:
    h = History(3)
    assert h.median() is None
    for s in (5.0, 1.0, 2.0, 3.0):
        h.add(s)
    assert len(h) == 3  # the oldest (5.0) is gone
    assert h.median() == 2.0
    h.add(500.0)
    assert h.median() == 3.0


def test_start_times_are_kept_per_page_cache_state_with_a_fallback() -> None:
    costs = _measured()
    assert costs.start_s("m", warm_cache=True) == 21.0
    assert costs.start_s("m", warm_cache=False) == 61.0
    only_warm = CostModel(history=4)
    only_warm.record_start("m", 10.0, warm_cache=True)
    assert only_warm.start_s("m", warm_cache=False) == 10.0  # the other state, not nothing
    assert only_warm.start_s("other", warm_cache=True) is None


def test_service_time_by_littles_law() -> None:
    clock = Clock()
    costs = CostModel(history=8, clock=clock)
    assert costs.service_s("m") is None
    _loaded(costs, clock, inflight=4, per_s=2)  # L = 4, lambda = 2/s -> W = 2 s
    assert costs.service_s("m") == 2.0
    assert costs.queue_s("m", outstanding=6, ready=2) == 6.0  # 3 each x 2 s
    assert costs.queue_s("m", outstanding=0, ready=1) == 0.0
    assert costs.queue_s("m", outstanding=3, ready=0) is None


def _views(*states: EngineState) -> list[EngineView]:
    return [EngineView(f"m-{i}", s, 5.0 if s is S.STARTING else None) for i, s in enumerate(states)]


def test_an_idle_ready_replica_beats_every_other_way() -> None:
    costs = _measured()
    opts = options(costs, "m", _views(S.READY, S.SLEEPING, S.COLD), 0, warm_cache=True)
    best = choose(opts)
    assert best is not None and best.way is Way.READY and best.expected_s == 0.0


def test_a_long_queue_wakes_the_sleeping_replica_not_the_cold_one() -> None:
    clock = Clock()
    costs = _measured(clock)
    _loaded(costs, clock, inflight=4, per_s=2)  # 2 s a request
    opts = options(costs, "m", _views(S.READY, S.SLEEPING, S.COLD), 8, warm_cache=True)
    by_way = {o.way: o.expected_s for o in opts}
    assert by_way == {Way.READY: 16.0, Way.WAKE: 1.0, Way.COLD: 21.0}
    best = choose(opts)
    assert best is not None and best.way is Way.WAKE and best.engine == "m-1"


def test_a_cold_start_only_when_it_beats_the_queue() -> None:
    clock = Clock()
    costs = _measured(clock)
    _loaded(costs, clock, inflight=4, per_s=2)
    views = _views(S.READY, S.COLD)
    short = choose(options(costs, "m", views, 5, warm_cache=True))  # queue 10 s < start 21 s
    assert short is not None and short.way is Way.READY
    long = choose(options(costs, "m", views, 30, warm_cache=True))  # queue 60 s > start 21 s
    assert long is not None and long.way is Way.COLD
    # The same queue with a cold page cache: the start (61 s) no longer beats it.
    cold_cache = choose(options(costs, "m", views, 30, warm_cache=False))
    assert cold_cache is not None and cold_cache.way is Way.READY


def test_a_replica_already_starting_counts_its_remaining_time() -> None:
    costs = _measured()
    opts = options(costs, "m", _views(S.STARTING, S.COLD), 0, warm_cache=True)
    assert {o.way: o.expected_s for o in opts} == {Way.STARTING: 16.0, Way.COLD: 21.0}
    best = choose(opts)
    assert best is not None and best.way is Way.STARTING


def test_ties_and_unknowns_prefer_ready_then_starting_then_wake_then_cold() -> None:
    assert choose([]) is None
    tie = [Option(Way.COLD, 1.0, "c"), Option(Way.WAKE, 1.0, "s"), Option(Way.READY, 1.0)]
    assert choose(tie) == Option(Way.READY, 1.0)
    assert choose(tie[:2]) == Option(Way.WAKE, 1.0, "s")
    # Nothing measured: a wake before a cold start; a ready replica with an unknown queue is not
    # abandoned on no evidence, even for a measured wake.
    unknown = [Option(Way.COLD, None, "c"), Option(Way.WAKE, None, "s")]
    assert choose(unknown) == Option(Way.WAKE, None, "s")
    assert choose([Option(Way.WAKE, 0.5, "s"), Option(Way.READY, None)]) == Option(Way.READY, None)
    # An unmeasured wake is expected to take at most the measured cold start: it still wins.
    assert choose([Option(Way.WAKE, None, "s"), Option(Way.COLD, 9.0, "c")]) == Option(
        Way.WAKE, 9.0, "s"
    )
    # ... but not over a ready queue that is shorter than that start.
    ready = Option(Way.READY, 4.0)
    assert choose([Option(Way.WAKE, None, "s"), Option(Way.COLD, 9.0, "c"), ready]) == ready


def test_a_model_with_no_history_prefers_waking_over_starting() -> None:
    costs = CostModel(history=4)
    best = choose(options(costs, "m", _views(S.COLD, S.SLEEPING), 0, warm_cache=False))
    assert best is not None and best.way is Way.WAKE
