"""Placement: plan with the allocator, evict victims, queue starts — under one lock.

Two swaps never pick the same GPUs or victims because planning, evicting and queueing the starts
(which mark the GPUs taken at once) happen under `_lock`; readiness is awaited outside it. When
the only possible victims are busy (starting, stopping, swapping), a swap waits (unlocked) for
any state change and re-plans, up to `supervisor.capacity_wait_s`. A swap that must evict asks
the swap scheduler first (`turns.Turns`: the resident's quantum, first come first served, the
starvation bound) and, while it says wait, re-plans the same way (on every gateway report too).

Eviction asks the gateways first: the victim is marked draining (the model table stops listing
its engines as upstreams), and it is stopped or put to sleep only once every live gateway says it
has taken it out of rotation and has no request left on it, or after `supervisor.drain_timeout_s`
(`gateways.GatewayReports`). The placer is the only writer of `Model.hot` and `Model.draining`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from orchestra.config import OrchestraConfig
from orchestra.tracing import Tracing

from . import allocator
from .changes import Changes
from .demand import Demand
from .engine import Engine
from .errors import EngineError, NoCapacity, SupervisorError
from .gateways import GatewayReports
from .metrics import SupervisorMetrics
from .model import Model
from .states import ACTIVE, EngineState
from .turns import Resident, Turns

log = logging.getLogger(__name__)
S = EngineState
_REPLAN_S = 0.5


class Placer:
    def __init__(
        self,
        models: dict[str, Model],
        gpus: list[int],
        config: OrchestraConfig,
        demand: Demand,
        reports: GatewayReports,
        metrics: SupervisorMetrics,
        swapping: Callable[[str], bool],
        turns: Turns,
        tracing: Tracing,
    ) -> None:
        self.models = models
        self.tracing = tracing  # evictions' spans, and the swaps' (`swaps.Swaps`)
        self.gpus = gpus
        self.config = config
        self.demand = demand
        self.reports = reports
        self.metrics = metrics
        self._swapping = swapping
        self.turns = turns
        self._lock = asyncio.Lock()
        self._changes = Changes()

    def notify(self) -> None:
        """An engine changed state: wake swaps waiting for capacity."""
        self._changes.notify()

    def set_hot(self, model: Model, hot: bool) -> None:
        """Add to or drop from the wanted set (start-up, explicit load/unload, swaps)."""
        model.hot = hot

    async def evict_now(self, model: Model, why: str, *, sleep_only: bool = False) -> None:
        """Drain, then sleep or stop `model` (`sleep_only`: sleep its READY engines, stop none)."""
        async with self._lock:
            await self._evict(model, why, sleep_only=sleep_only)

    async def place(self, model: Model, force: bool, reset: bool) -> list[Awaitable[None]]:
        """Plan, evict and queue the starts under the lock; wait (unlocked) for busy victims
        and for the swap scheduler's turn (which adds at most `swap_max_wait_s`)."""
        wait_s = self.config.supervisor.capacity_wait_s
        if self.turns.enabled:
            wait_s += self.turns.max_wait_s
        deadline = time.monotonic() + wait_s
        self.turns.begin(model.name)
        try:
            while True:
                async with self._lock:
                    try:
                        return await self._place_locked(model, force, reset)
                    except allocator.Unplaceable as exc:
                        remaining = deadline - time.monotonic()
                        if exc.permanent or remaining <= 0:
                            raise NoCapacity(f"cannot place {model.name}: {exc.reason}") from None
                        changed = self._changes.ticket()
                # Re-plan on any state change, and at least every _REPLAN_S.
                await self._changes.wait(changed, min(remaining, _REPLAN_S))
        finally:
            self.turns.end(model.name)

    async def grow(self, model: Model, engines: list[Engine]) -> list[Awaitable[None]]:
        """Bring up more replicas of a serving model (the cost model chose to): on free capacity
        only (no eviction, no waiting); [] when there is none now."""
        async with self._lock:
            placing = [e for e in engines if e.state in (S.COLD, S.SLEEPING)]
            if not placing:
                return []
            try:
                plan = allocator.plan(
                    self.gpus,
                    self._holders(exclude=model, include_self=True),
                    [self._need(e) for e in placing],
                    max_resident=self.config.supervisor.max_resident,
                )
            except allocator.Unplaceable:
                return []
            if plan.victims:
                return []
            return [e.begin_start(g, False) for e, g in zip(placing, plan.assignment, strict=True)]

    async def _place_locked(self, model: Model, force: bool, reset: bool) -> list[Awaitable[None]]:
        waits: list[Awaitable[None]] = []
        placing: list[Engine] = []
        needs: list[allocator.Need] = []
        for e in model.engines:
            if e.state is S.READY:
                continue
            if e.state is S.STARTING or e.start_pending:
                waits.append(self._settled(e))
            elif e.state is S.STOPPING:
                raise allocator.Unplaceable(f"{e.id} is still stopping", False)
            elif e.state is S.FAILED and not reset:
                raise EngineError(f"{e.id} is FAILED (use load to retry): {e.last_error}")
            elif e.state is S.BACKOFF:
                waits.append(e.begin_start(e.gpus, reset))  # keeps its GPUs: start it now
            else:
                placing.append(e)
                needs.append(self._need(e))
        if not placing:
            return waits
        holders = self._holders(exclude=model)
        try:
            plan = self._plan(holders, needs, force)
        except allocator.Unplaceable as exc:
            if not exc.permanent:  # busy victims: still queue for them, first come first served
                self._note_wants(model, holders, needs)
            raise
        if plan.victims and not force:  # a forced load takes no turn
            why = self.turns.may_evict(model.name, [self._resident(v) for v in plan.victims])
            if why is not None:
                raise allocator.Unplaceable(why, False)
        if plan.victims:
            log.info("placing %s on %s: evicting %s", model.name, plan.assignment, plan.victims)
            await asyncio.gather(*(self._evict(self.models[v], "swap") for v in plan.victims))
        for engine, gpus in zip(placing, plan.assignment, strict=True):
            waits.append(engine.begin_start(gpus, reset))
        return waits

    def _note_wants(
        self, model: Model, holders: list[allocator.Holder], needs: list[allocator.Need]
    ) -> None:
        try:
            forced = self._plan(holders, needs, force=True)
        except allocator.Unplaceable:
            return
        self.turns.want(model.name, forced.victims)

    def _plan(
        self, holders: list[allocator.Holder], needs: list[allocator.Need], force: bool
    ) -> allocator.Plan:
        return allocator.plan(
            self.gpus, holders, needs, max_resident=self.config.supervisor.max_resident, force=force
        )

    def _resident(self, name: str) -> Resident:
        m = self.models[name]
        inflight = self.reports.inflight(e.url for e in m.ready())
        return Resident(name, m.resident_since, inflight, self.demand.last_used(name))

    def _need(self, e: Engine) -> allocator.Need:
        if not self.gpus:
            return allocator.Need()  # a CPU host: CPU engines
        if e.state is S.SLEEPING:
            return allocator.Need(pins=tuple(e.gpus))  # it can only wake where it sleeps
        if e.spec.pinned_gpus is not None:
            return allocator.Need(pins=e.spec.pinned_gpus)
        return allocator.Need(count=e.spec.tensor_parallel_size)

    def _holders(self, exclude: Model, include_self: bool = False) -> list[allocator.Holder]:
        holders = []
        for m in self.models.values():
            held = m.holding()
            if (m is exclude and not include_self) or not held:
                continue
            gpus = frozenset(g for e in held for g in e.gpus)
            serving = self.reports.inflight(e.url for e in held) > 0
            holders.append(
                allocator.Holder(m.name, gpus, self.demand.last_used(m.name), self.busy(m), serving)
            )
        return holders

    def busy(self, m: Model) -> bool:
        """Not to be evicted now: a start, stop or swap is under way. (Requests in flight do
        not make a model busy: eviction drains them first.)"""
        transitioning = any(
            e.state in (S.STARTING, S.STOPPING) or e.start_pending for e in m.engines
        )
        return transitioning or self._swapping(m.name)

    async def _settled(self, e: Engine) -> None:
        """Wait until an engine started by someone else is READY; raise its error otherwise."""
        while e.state is S.STARTING or e.start_pending:
            await self._changes.wait(self._changes.ticket())
        if e.state is not S.READY:
            raise EngineError(f"{e.id} did not start: {e.last_error}")

    # ---- evict ----------------------------------------------------------------------------------
    async def _evict(self, model: Model, why: str, *, sleep_only: bool = False) -> None:
        """Free a model's GPUs: drain it, then sleep engines that can sleep, stop the rest."""
        model.hot = False
        with self.tracing.span("evict") as span:
            span.set_attribute("orchestra.model", model.name)
            span.set_attribute("orchestra.why", why)
            try:
                with self.tracing.span("drain"):
                    await self._drain(model, why)
                if sleep_only:
                    await asyncio.gather(*(e.sleep() for e in model.ready()))
                else:
                    with self.tracing.span("stop"):
                        await asyncio.gather(*(self._evict_engine(e, why) for e in model.engines))
            finally:
                model.draining = False
        await self._trim_sleeping()

    async def _drain(self, model: Model, why: str) -> None:
        urls = [e.url for e in model.ready()]
        if not urls:
            return
        model.draining = True
        self.notify()
        began = time.monotonic()
        timeout = self.config.supervisor.drain_timeout_s
        drained = await self.reports.wait_drained(urls, timeout)
        waited = time.monotonic() - began
        self.metrics.drain_seconds.observe(waited)
        if drained:
            log.info("%s drained in %.2fs (%s)", model.name, waited, why)
        else:
            log.warning(
                "%s still has requests in flight after drain_timeout_s=%gs: evicting anyway",
                model.name,
                timeout,
            )

    async def _evict_engine(self, e: Engine, why: str) -> None:
        if e.state is S.READY and e.spec.sleep_mode:
            try:
                await e.sleep()
                self.metrics.evictions.labels(e.spec.served_name, "sleep").inc()
                return
            except SupervisorError as exc:
                log.warning("%s could not sleep (%s): stopping it", e.id, exc.message)
        if e.state in ACTIVE:
            await e.stop()
            self.metrics.evictions.labels(e.spec.served_name, "stop").inc()
        log.info("evicted %s (%s)", e.id, why)

    async def _trim_sleeping(self) -> None:
        """Keep at most `max_sleeping` sleeping engines (their weights sit in host RAM)."""
        limit = self.config.supervisor.max_sleeping
        if limit is None:
            return
        sleeping = [e for m in self.models.values() for e in m.sleeping()]
        sleeping.sort(key=lambda e: self.demand.last_used(e.spec.served_name))
        excess = sleeping[: max(0, len(sleeping) - limit)]
        await asyncio.gather(*(e.stop() for e in excess))
