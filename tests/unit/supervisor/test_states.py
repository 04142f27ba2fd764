from __future__ import annotations

import itertools

import pytest

from orchestra.supervisor.states import EngineState as S
from orchestra.supervisor.states import check_transition, model_state


def test_lifecycle_path_is_legal() -> None:
    path = [S.COLD, S.STARTING, S.READY, S.SLEEPING, S.READY, S.STOPPING, S.COLD]
    for old, new in itertools.pairwise(path):
        check_transition(old, new)
    for old, new in [(S.STARTING, S.BACKOFF), (S.BACKOFF, S.STARTING), (S.BACKOFF, S.FAILED)]:
        check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), [(S.COLD, S.READY), (S.STOPPING, S.READY)])
def test_illegal_transitions_raise(old: S, new: S) -> None:
    with pytest.raises(RuntimeError):
        check_transition(old, new)


def test_model_state_prefers_ready() -> None:
    assert model_state([S.FAILED, S.READY]) is S.READY
    assert model_state([S.COLD, S.STARTING]) is S.STARTING
    assert model_state([]) is S.COLD
