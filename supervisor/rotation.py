"""Demand rotation (seed 004's rule): swap a busy cold model in for the least-used hot one.

A cold model is swapped in when its requests in the window exceed `rotation.threshold` and
twice those of the least-used hot model that has been resident for `min_residency_s` and has
nothing in flight. Hysteresis: the factor of two, the residency floor, and one swap per tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from orchestra.config import RotationConfig
from orchestra.loops import every

from .errors import SupervisorError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelDemand:
    name: str
    hot: bool
    count: int
    resident_since: float | None = None
    busy: bool = False


def decide(
    models: list[ModelDemand], threshold: int, min_residency_s: float, now: float
) -> tuple[str, str] | None:
    """(cold model to swap in, hot model to swap out), or None."""
    cold = [m for m in models if not m.hot]
    hot = [
        m
        for m in models
        if m.hot
        and not m.busy
        and m.resident_since is not None
        and now - m.resident_since >= min_residency_s
    ]
    if not cold or not hot:
        return None
    victim = min(hot, key=lambda m: (m.count, m.resident_since or 0.0))
    candidate = max(cold, key=lambda m: m.count)
    if candidate.count > threshold and candidate.count > 2 * victim.count:
        return candidate.name, victim.name
    return None


class Rotatable(Protocol):
    def demand_table(self) -> list[ModelDemand]: ...

    async def rotate(self, cold: str, hot: str) -> None: ...


class Rotator:
    """Runs `decide` every `interval_s` and asks the manager to carry out the swap."""

    def __init__(
        self, target: Rotatable, config: RotationConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._target = target
        self._config = config
        self._clock = clock

    async def tick(self) -> tuple[str, str] | None:
        choice = decide(
            self._target.demand_table(),
            self._config.threshold,
            self._config.min_residency_s,
            self._clock(),
        )
        if choice is not None:
            cold, hot = choice
            log.info("rotation: swapping %s in for %s", cold, hot)
            try:
                await self._target.rotate(cold, hot)
            except SupervisorError as exc:
                log.warning("rotation %s <- %s failed: %s", hot, cold, exc.message)
        return choice

    async def run(self) -> None:
        """`tick` every `interval_s` until cancelled (a failed tick is logged; the next runs)."""
        interval = self._config.interval_s
        await every("rotation tick", interval, self.tick, first_after_s=interval)
