"""Engine and model states, and which engine transitions are legal.

COLD -> STARTING -> READY -> (SLEEPING <-> READY) -> STOPPING -> COLD
STARTING/READY/SLEEPING --(exit)--> BACKOFF -> STARTING ... -> FAILED (after N failures)
"""

from __future__ import annotations

from enum import StrEnum


class EngineState(StrEnum):
    COLD = "cold"
    STARTING = "starting"
    READY = "ready"
    SLEEPING = "sleeping"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    FAILED = "failed"


S = EngineState

TRANSITIONS: dict[EngineState, frozenset[EngineState]] = {
    S.COLD: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.READY, S.BACKOFF, S.STOPPING, S.FAILED}),
    S.READY: frozenset({S.SLEEPING, S.STOPPING, S.BACKOFF, S.FAILED}),
    S.SLEEPING: frozenset({S.READY, S.STOPPING, S.BACKOFF, S.FAILED}),
    S.STOPPING: frozenset({S.COLD}),
    S.BACKOFF: frozenset({S.STARTING, S.COLD, S.FAILED}),
    S.FAILED: frozenset({S.STARTING, S.COLD}),
}

# States in which an engine occupies its GPUs (a sleeping engine is parked: its GPUs are free
# for others, but it can only wake on the same ones).
ACTIVE = frozenset({S.STARTING, S.READY, S.BACKOFF, S.STOPPING})
# States with a live process group.
ALIVE = frozenset({S.STARTING, S.READY, S.SLEEPING, S.STOPPING})

# Model-level state: the "best" state among its engines, in this order.
_MODEL_ORDER = (S.READY, S.STARTING, S.STOPPING, S.SLEEPING, S.BACKOFF, S.FAILED, S.COLD)


def check_transition(old: EngineState, new: EngineState) -> None:
    if new not in TRANSITIONS[old]:
        raise RuntimeError(f"illegal engine transition {old.value} -> {new.value}")


def model_state(states: list[EngineState]) -> EngineState:
    """A model is READY if any engine is, else the most advanced state of its engines."""
    for state in _MODEL_ORDER:
        if state in states:
            return state
    return S.COLD
