"""The one place that chooses how a model's next request is served: the cost model's choice
(`costs.choose`) over its replicas, fed with the measured start, wake and service times.

Asked on every ensure of a serving model and after every gateway report (load rising): when
waking a sleeping replica or starting a cold one is expected to serve sooner than the queue at
the ready ones, that replica is brought up on free capacity (`Placer.grow`: never by evicting).
A model with no ready replica is swapped in as a whole, and the swap returns on the first
replica READY (`swaps.py`), which is the cheapest way by measurement. The expected wait of the
chosen way is the model table's `expected_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from orchestra.protocol import GatewayReport

from .costs import CostModel, EngineView, Option, Way, choose, options
from .engine import Engine
from .gateways import GatewayReports
from .model import Model
from .placement import Placer
from .preloader import Preloader
from .states import EngineState

log = logging.getLogger(__name__)
S = EngineState
_WARM = 0.9  # page-cache residency from which a start counts as warm


class Scaler:
    def __init__(
        self,
        models: dict[str, Model],
        costs: CostModel,
        placer: Placer,
        reports: GatewayReports,
        preloader: Preloader,
    ) -> None:
        self._models = models
        self.costs = costs
        self._placer = placer
        self._reports = reports
        self._preloader = preloader
        self._growing: dict[str, asyncio.Task[None]] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._growing.values())

    def _warm(self, name: str) -> bool:
        return self._preloader.residency[name].fraction >= _WARM

    # ---- measurements ---------------------------------------------------------------------------
    def on_ready(self, model: Model, engine_id: str, old: EngineState) -> None:
        """An engine became READY: its start (or wake) joins the model's history."""
        engine = next(e for e in model.engines if e.id == engine_id)
        took = engine.last_startup_s
        if took is None:
            return
        if old is S.SLEEPING:
            self.costs.record_wake(model.name, took)
        elif old is S.STARTING:
            self.costs.record_start(model.name, took, self._warm(model.name))

    def after_report(self, report: GatewayReport) -> None:
        """A gateway's report: each model's load, then whether it should grow."""
        for model in self._models.values():
            ready = model.ready()
            if not ready:
                continue
            inflight = self._reports.inflight(e.url for e in ready)
            self.costs.record_load(model.name, inflight, report.demand.get(model.name, 0))
            self.consider(model)

    # ---- the choice -----------------------------------------------------------------------------
    def best(self, model: Model) -> Option | None:
        now = time.monotonic()
        views = [
            EngineView(
                e.id,
                e.state,
                None if e.starting_since is None else now - e.starting_since,
            )
            for e in model.engines
        ]
        outstanding = self._reports.inflight(e.url for e in model.serving())
        return choose(options(self.costs, model.name, views, outstanding, self._warm(model.name)))

    def swap_in_s(self, model: Model) -> float | None:
        """The measured time to bring `model` in: a wake when it has a sleeping engine."""
        if model.sleeping():
            return self.costs.wake_s(model.name) or self.costs.start_s(model.name, True)
        return self.costs.start_s(model.name, self._warm(model.name))

    def expected_s(self, model: Model) -> float | None:
        best = self.best(model)
        return None if best is None or best.expected_s is None else round(best.expected_s, 3)

    def consider(self, model: Model) -> Option | None:
        """Bring up the replica the choice names, when it is a wake or a cold start."""
        if not model.serving() or model.name in self._growing:
            return None
        best = self.best(model)
        if best is None or best.way not in (Way.WAKE, Way.COLD):
            return best
        engine = next(e for e in model.engines if e.id == best.engine)
        log.info(
            "%s: %s %s (expected %.2fs) rather than queue",
            model.name,
            "waking" if best.way is Way.WAKE else "starting",
            engine.id,
            best.expected_s or 0.0,
        )
        task = asyncio.create_task(self._grow(model, engine), name=f"grow:{model.name}")
        self._growing[model.name] = task
        return best

    async def _grow(self, model: Model, engine: Engine) -> None:
        try:
            waits = await self._placer.grow(model, [engine])
            for result in await asyncio.gather(*waits, return_exceptions=True):
                if isinstance(result, Exception):
                    log.warning("%s: growing onto %s failed: %s", model.name, engine.id, result)
        finally:
            self._growing.pop(model.name, None)
