"""The swap scheduler (supervisor/turns.py): a resident model with work keeps its slot for a
quantum, waiting swaps go first come first served, and a swap that has waited the bound evicts
regardless (no starvation). A quantum of 0 is the old policy: evict at once."""

from __future__ import annotations

import pytest

from orchestra.config import ConfigError, parse_config
from orchestra.supervisor.turns import Resident, Turns


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _turns(
    quantum_s: float = 10.0, max_wait_s: float = 30.0, idle_s: float = 0.0
) -> tuple[Turns, Clock]:
    clock = Clock()
    return Turns(quantum_s, max_wait_s, idle_s, clock=clock), clock


def test_a_busy_resident_keeps_its_slot_for_the_quantum() -> None:
    turns, clock = _turns()
    a = Resident("a", resident_since=clock.now, inflight=3)
    turns.begin("b")
    clock.now += 4
    why = turns.may_evict("b", [Resident("a", a.resident_since, 3)])
    assert why is not None and "quantum" in why
    clock.now += 6  # a has held the slot 10 s
    assert turns.may_evict("b", [Resident("a", a.resident_since, 3)]) is None


def test_an_idle_resident_is_evicted_at_once() -> None:
    turns, clock = _turns()
    turns.begin("b")
    assert turns.may_evict("b", [Resident("a", clock.now, inflight=0)]) is None
    assert turns.may_evict("b", [Resident("a", None, inflight=5)]) is None  # not yet serving


def test_a_resident_asked_for_recently_is_in_use_between_requests() -> None:
    turns, clock = _turns(idle_s=2.0)
    turns.begin("b")
    since = clock.now
    recent = Resident("a", since, inflight=0, last_used=clock.now - 1.0)
    why = turns.may_evict("b", [recent])
    assert why is not None and "quantum" in why  # a gap between arrivals is not idleness
    stale = Resident("a", since, inflight=0, last_used=clock.now - 2.0)
    assert turns.may_evict("b", [stale]) is None


def test_no_victims_or_quantum_zero_never_waits() -> None:
    turns, clock = _turns()
    turns.begin("b")
    assert turns.may_evict("b", []) is None
    old, clock = _turns(quantum_s=0.0)
    assert not old.enabled
    old.begin("b")
    assert old.may_evict("b", [Resident("a", clock.now, inflight=9)]) is None


def test_the_older_waiting_swap_goes_first() -> None:
    turns, clock = _turns()
    a = Resident("a", clock.now - 60, inflight=0)  # idle: evictable
    turns.begin("b")
    turns.want("b", ["a"])  # its plan (say, while a was still busy)
    clock.now += 1
    turns.begin("c")
    why = turns.may_evict("c", [a])
    assert why is not None and "older swap of b" in why
    assert turns.may_evict("b", [a]) is None
    turns.end("b")  # b evicted a and started
    assert turns.may_evict("c", [a]) is None
    assert list(turns.waiting()) == ["c"]


def test_an_older_swap_wanting_other_victims_does_not_block() -> None:
    turns, clock = _turns()
    turns.begin("b")
    turns.want("b", ["x"])
    clock.now += 1
    turns.begin("c")
    assert turns.may_evict("c", [Resident("a", None, 0)]) is None


def test_the_starvation_bound_overrides_the_quantum() -> None:
    turns, clock = _turns(quantum_s=10.0, max_wait_s=12.0)
    turns.begin("b")
    clock.now += 5
    busy = Resident("a", resident_since=clock.now, inflight=4)  # a's turn only just began
    assert turns.may_evict("b", [busy]) is not None
    clock.now += 7  # b has waited 12 s: a is 7 s into its 10 s quantum, b goes anyway
    assert turns.waited_s("b") == 12.0
    assert turns.may_evict("b", [busy]) is None


def test_a_bounded_wait_for_every_model_under_round_robin_turns() -> None:
    """Three models, one slot, always work for each: simulate the slot's owner over time and
    check every waiting swap gets in within max_wait_s."""
    quantum, bound = 2.0, 5.0
    turns, clock = _turns(quantum, bound)
    owner, since = "a", clock.now
    for m in ("b", "c"):
        turns.begin(m)
        clock.now += 0.1
    worst: dict[str, float] = {}
    for _ in range(400):
        clock.now += 0.1
        for m, waited in turns.waiting().items():
            if turns.may_evict(m, [Resident(owner, since, inflight=3)]) is None:
                worst[m] = max(worst.get(m, 0.0), waited)
                turns.end(m)
                turns.begin(owner)  # the evicted one has work: it waits now
                owner, since = m, clock.now
                break
    assert set(worst) == {"a", "b", "c"}
    assert max(worst.values()) <= bound + 0.1


def test_the_quantum_scales_with_the_measured_swap_in_up_to_the_cap() -> None:
    clock = Clock()
    swap_in = {"b": 1.5, "c": 60.0}
    turns = Turns(10.0, 30.0, ratio=2.0, swap_in_s=swap_in.get, clock=clock)
    assert turns.quantum("b") == 3.0  # 2 x a 1.5 s wake
    assert turns.quantum("c") == 10.0  # 2 x a 60 s start, capped
    assert turns.quantum("d") == 10.0  # never measured: the cap
    turns.begin("b")
    since = clock.now
    clock.now += 2.0
    assert turns.may_evict("b", [Resident("a", since, inflight=1)]) is not None
    clock.now += 1.0
    assert turns.may_evict("b", [Resident("a", since, inflight=1)]) is None


def test_the_bounds_are_config_fields_with_defaults_and_named_errors() -> None:
    config = parse_config({"servers": [{"name": "a", "model": "/m", "idle_unload_s": 5}]})
    sup = config.supervisor
    assert (sup.swap_quantum_s, sup.swap_max_wait_s, sup.swap_idle_s) == (10.0, 30.0, 2.0)
    assert sup.swap_quantum_ratio == 2.0 and config.servers[0].idle_unload_s == 5.0
    with pytest.raises(ConfigError, match=r"servers\[0\]\.idle_unload_s"):
        parse_config({"servers": [{"name": "a", "model": "/m", "idle_unload_s": 0}]})
    with pytest.raises(ConfigError, match=r"supervisor\.swap_max_wait_s"):
        parse_config({"supervisor": {"swap_max_wait_s": 0}})
