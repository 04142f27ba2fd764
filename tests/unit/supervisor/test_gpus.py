from __future__ import annotations

from orchestra.config import SupervisorConfig
from orchestra.supervisor.gpus import resolve_gpus


def test_config_gpus_without_nvidia_smi() -> None:
    assert resolve_gpus(SupervisorConfig(gpus=[6, 0, 1]), None) == [0, 1, 6]
    assert resolve_gpus(SupervisorConfig(), None) == []  # a CPU host


def test_detected_gpus_win_and_config_restricts() -> None:
    assert resolve_gpus(SupervisorConfig(), [0, 1, 2, 3]) == [0, 1, 2, 3]
    assert resolve_gpus(SupervisorConfig(gpus=[1, 2, 9]), [0, 1, 2, 3]) == [1, 2]
