"""The model table and the supervisor's commands (ensure, load, unload, sleep, wake, restart, a
gateway's sync), start-up and shutdown. `ensure(model)` makes a model READY and returns it, joining
the model's swap (`swaps.Swaps`: one swap task per model). Where engines go and who is evicted is
`placement.Placer`'s alone (the swap scheduler `turns.Turns` says when); how a serving model's next
request is served (queue, wake, cold start) is `scaling.Scaler`'s; `idle.IdleUnloader` evicts idle
models. Once the shutdown begins (`closing.Closing`), waiting commands answer 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp

from orchestra.config import OrchestraConfig
from orchestra.loops import every
from orchestra.protocol import GatewayReport, ModelInfo, NodeLoad
from orchestra.tracing import Tracing

from .adoption import adopt_engines, engine_api_key
from .closing import Closing
from .costs import CostModel
from .demand import Demand
from .engine import Engine
from .errors import BadRequest, ModelNotFound
from .gateways import GatewayReports
from .idle import IdleUnloader
from .launch import EngineSpec, build_specs, port_picker
from .logtail import tail_lines
from .metrics import ModelSample, SupervisorMetrics
from .model import Model
from .placement import Placer
from .preloader import Preloader
from .probe import EngineProbe
from .procgroup import ProcessGroups
from .rotation import ModelDemand, Rotator
from .scaling import Scaler
from .states import EngineState
from .swaps import Swaps
from .turns import Turns

log = logging.getLogger(__name__)
S = EngineState


class Manager:
    def __init__(
        self,
        config: OrchestraConfig,
        gpus: list[int],
        session: aiohttp.ClientSession,
        groups: ProcessGroups,
        tracing: Tracing,  # the swaps' spans (`tracing:`, or off)
    ) -> None:
        self.config = config
        self.gpus = gpus
        self.groups = groups
        self.demand = Demand(config.rotation.window_s)
        self.reports = GatewayReports(config.supervisor.gateway_ttl_s)
        probe = self._probe = EngineProbe(session, config.engine)
        self.models: dict[str, Model] = {}
        all_specs = build_specs(config, engine_api_key(config))
        ports = port_picker(config.engine.first_port, all_specs)  # one for every engine
        for name, specs in all_specs.items():
            server = config.server(name)
            assert server is not None
            engines = [
                Engine(s, config.engine, groups, probe, self._on_change, ports) for s in specs
            ]
            self.models[name] = Model(server, engines)
        self.preloader = Preloader(
            config.preload, {n: m.server.model or "" for n, m in self.models.items()}
        )
        self.metrics = SupervisorMetrics(self._sample)
        self.rotator = Rotator(self, config.rotation)
        sup = config.supervisor
        turns = Turns(
            sup.swap_quantum_s, sup.swap_max_wait_s, sup.swap_idle_s, sup.swap_quantum_ratio,
            lambda n: self.scaler.swap_in_s(self.models[n]),
        )  # fmt: skip
        placer = self.placer = Placer(
            self.models, gpus, config, self.demand, self.reports, self.metrics,
            lambda n: self.swaps.running(n), turns, tracing,
        )  # fmt: skip
        self.swaps = Swaps(placer, self.metrics)
        costs = CostModel(sup.cost_history)
        self.scaler = Scaler(self.models, costs, placer, self.reports, self.preloader)
        self.idle = IdleUnloader(self.models, self.demand, self.reports, placer, self.preloader)
        self._tasks: list[asyncio.Task[None]] = []
        self.closing = Closing()

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        engines = {e.id: e for m in self.models.values() for e in m.engines}
        for engine in engines.values():
            engine.run()
        if self.config.supervisor.on_supervisor_exit == "adopt":
            for engine_id in await adopt_engines(engines, self.groups, self._probe):
                self.placer.set_hot(self.models[engines[engine_id].spec.served_name], True)
        self.groups.kill_leftovers()
        self.groups.start_reaper()
        if self.config.supervisor.start_hot:
            hot = [s.name for s in self.config.servers if s.name in self.models]
            for name in hot:
                self.placer.set_hot(self.models[name], True)
            self._spawn(self._start_hot(hot), "start-hot")
        self._spawn(self._page_cache_loop(self._tasks[-1] if self._tasks else None), "page-cache")
        if self.config.rotation.enabled:
            self._spawn(self.rotator.run(), "rotation")
        if any(m.server.idle_unload_s is not None for m in self.models.values()):
            self._spawn(self.idle.run(self.config.supervisor.idle_check_interval_s), "idle-unload")

    async def close(self, keep_engines: bool = False) -> None:
        """Stop every background task and every engine (each group: SIGTERM, deadline, SIGKILL);
        `keep_engines`: leave them serving, recorded for the next supervisor to adopt."""
        self.closing.begin()
        self.preloader.close()
        swaps = [*self.swaps.tasks(), *self.scaler.tasks()]
        for task in [*self._tasks, *swaps]:
            task.cancel()
        await asyncio.gather(*self._tasks, *swaps, return_exceptions=True)
        engines = [e for m in self.models.values() for e in m.engines]
        if keep_engines:
            await asyncio.gather(*(e.detach() for e in engines), return_exceptions=True)
            self.groups.release_all()
            log.info("supervisor exits leaving its engines running for the next one to adopt")
            return
        await asyncio.gather(*(e.close() for e in engines), return_exceptions=True)
        self.groups.kill_all_now()
        self.groups.stop_reaper(self.config.engine.stop_timeout_s + 5)

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _start_hot(self, names: list[str]) -> None:
        timeout = self.config.supervisor.ensure_timeout_s
        results = await asyncio.gather(
            *(self.ensure(n, timeout) for n in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.error("hot model %s did not start: %s", name, result)

    async def _page_cache_loop(self, after: asyncio.Task[None] | None) -> None:
        """Measure residency; preload cold models once the hot set is up (no I/O contention)."""
        await self.preloader.measure()
        if after is not None:
            await asyncio.wait([after])
        await every("page-cache pass", self.config.preload.interval_s, self._page_cache_pass, 0.0)

    async def _page_cache_pass(self) -> None:
        if self.config.preload.enabled:
            await self.preloader.preload(self.cold_models())
        await self.preloader.measure()

    # ---- queries --------------------------------------------------------------------------------
    def get(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"The model `{name}` is not managed by this supervisor.", "model")
        return model

    def info(self, name: str) -> ModelInfo:
        model = self.get(name)
        last_used = self.demand.seconds_since_use(name)
        return model.info(last_used, self.preloader.residency[name], self.scaler.expected_s(model))

    def table(self) -> list[ModelInfo]:
        return [self.info(name) for name in self.models]

    def logs(self, name: str, lines: int, replica: int = 0) -> list[str]:
        return tail_lines(self.log_path(name, replica), lines)

    def log_path(self, name: str, replica: int = 0) -> Path:
        engines = self.get(name).engines
        if not 0 <= replica < len(engines):
            raise BadRequest(
                f"{name} has {len(engines)} engine(s); no replica {replica}", "replica"
            )
        return engines[replica].spec.log_path

    def cold_models(self) -> list[str]:
        """Preload candidates: not resident, preload on; busiest first, then config order."""
        cold = [
            m.name
            for m in self.models.values()
            if m.server.preload and not m.holding() and not m.sleeping() and not m.hot
        ]
        return sorted(cold, key=lambda n: -self.demand.count(n))

    def demand_table(self) -> list[ModelDemand]:
        return [
            ModelDemand(
                name=m.name,
                hot=m.hot or bool(m.holding()) or self.swaps.running(m.name),
                count=self.demand.count(m.name),
                resident_since=m.resident_since,
                busy=self.placer.busy(m),
            )
            for m in self.models.values()
            if m.state is not S.FAILED
        ]

    # ---- commands -------------------------------------------------------------------------------
    async def ensure(
        self, name: str, timeout_s: float, *, force: bool = False, reset: bool = False
    ) -> Model:
        """Make `name` READY and serving (evicting others if needed); joins a swap already under
        way. A model being drained is swapped in again once its eviction is done."""
        model = self.get(name)
        self.demand.touch(name)
        if model.serving():
            self.scaler.consider(model)  # a wake or a cold start may serve sooner than the queue
            return model
        await self.swaps.join(model, timeout_s, force, reset)
        return model

    async def unload(self, name: str) -> Model:
        model = self.get(name)
        await self.placer.evict_now(model, "unload")
        await asyncio.gather(*(e.stop() for e in model.engines))  # BACKOFF/FAILED -> COLD too
        return model

    async def sleep(self, name: str) -> Model:
        model = self.get(name)
        if not model.server.sleep_mode:
            raise BadRequest(f"{name} does not have sleep_mode enabled", "model")
        await self.placer.evict_now(model, "sleep", sleep_only=True)
        return model

    async def wake(self, name: str, timeout_s: float) -> Model:
        model = self.get(name)
        if not model.sleeping() and not model.ready():
            raise BadRequest(f"{name} is not sleeping (state {model.state.value})", "model")
        return await self.ensure(name, timeout_s)

    async def restart(self, name: str, timeout_s: float) -> Model:
        model = self.get(name)
        alive = [e for e in model.engines if e.state in (S.READY, S.SLEEPING, S.BACKOFF)]
        if not alive:
            return await self.ensure(name, timeout_s, reset=True)
        self.placer.set_hot(model, True)
        await asyncio.gather(*(e.restart(e.gpus) for e in alive))
        return model

    async def rotate(self, cold: str, hot: str) -> None:
        """Demand rotation: evict `hot`, then swap `cold` in."""
        await self.placer.evict_now(self.get(hot), "rotation")
        self.metrics.rotations.inc()
        await self.ensure(cold, self.config.supervisor.ensure_timeout_s)

    def sync(self, gateway_id: str, report: GatewayReport) -> list[ModelInfo]:
        """A gateway's periodic report (demand, in-flight per engine); the model table back."""
        # Only this table's models: a report's own names never become keys here.
        self.demand.record({n: c for n, c in report.demand.items() if n in self.models})
        self.reports.record(gateway_id, report)
        busy_urls = {url for url, n in report.inflight.items() if n > 0}
        for model in self.models.values():
            if any(e.url in busy_urls for e in model.engines):
                self.demand.touch(model.name)  # serving requests: recently used
        self.scaler.after_report(report)
        self.placer.notify()  # in-flight counts changed: swaps waiting for a turn re-plan
        return self.table()

    def node_load(self) -> NodeLoad:
        """How full this node is: gateways place a cold model on the node with room first."""
        holding = [e for m in self.models.values() for e in m.holding()]
        held = {g for e in holding for g in e.gpus}
        max_resident = self.config.supervisor.max_resident
        return NodeLoad(
            resident=len(holding),
            gpus=len(self.gpus),
            free_gpus=len([g for g in self.gpus if g not in held]),
            free_slots=None if max_resident is None else max(0, max_resident - len(holding)),
        )

    # ---- state changes and metrics --------------------------------------------------------------
    def _on_change(self, engine: EngineSpec, old: EngineState, new: EngineState) -> None:
        model = self.models.get(engine.served_name)
        if model is not None:
            if new is S.READY:
                self.scaler.on_ready(model, engine.id, old)  # a start or a wake measured
                if model.resident_since is None:
                    model.resident_since = time.monotonic()
            if not model.ready():
                model.resident_since = None
            if new is S.FAILED and not model.holding():
                self.placer.set_hot(model, False)
        self.placer.notify()

    def _sample(self) -> tuple[list[ModelSample], int]:
        samples = [
            m.sample(self.preloader.residency[m.name], self.demand.count(m.name))
            for m in self.models.values()
        ]
        return samples, len(self.gpus)
