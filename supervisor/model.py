"""One managed model: its config, its engines (one per replica) and its place in the hot set."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from orchestra.config import ServerConfig
from orchestra.protocol import EngineInfo, ModelInfo

from .engine import Engine
from .metrics import ModelSample
from .pagecache import Residency
from .states import ACTIVE, EngineState, model_state


@dataclass
class Model:
    server: ServerConfig
    engines: list[Engine]
    # `hot` (in the resident/wanted set) and `draining` (being evicted: no new requests) are
    # written by `placement.Placer` only, which owns residency.
    hot: bool = False
    draining: bool = False
    resident_since: float | None = None  # monotonic time it became READY
    runtime_adapters: dict[str, str] = field(default_factory=dict)  # LoRA loaded at run time

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def state(self) -> EngineState:
        return model_state([e.state for e in self.engines])

    def ready(self) -> list[Engine]:
        return [e for e in self.engines if e.state is EngineState.READY]

    def serving(self) -> list[Engine]:
        """READY engines that take new requests (none while the model drains)."""
        return [] if self.draining else self.ready()

    def holding(self) -> list[Engine]:
        """Engines that occupy GPUs / a resident slot (or are about to)."""
        return [e for e in self.engines if e.state in ACTIVE or e.start_pending]

    def sleeping(self) -> list[Engine]:
        return [e for e in self.engines if e.state is EngineState.SLEEPING]

    def restarts(self) -> int:
        return sum(e.restarts for e in self.engines)

    def info(
        self, last_used_s_ago: float | None, page_cache: Residency, expected_s: float | None
    ) -> ModelInfo:
        """This model's entry in the control API's model table."""
        return ModelInfo(
            name=self.name,
            managed=True,
            kind=self.server.kind,
            hot=self.hot,
            state="draining" if self.draining and self.ready() else self.state.value,
            upstreams=[e.url for e in self.serving()],
            draining=[e.url for e in self.ready()] if self.draining else [],
            engines=[engine_info(e) for e in self.engines],
            page_cache=page_cache.as_page_cache(),
            last_used_s_ago=None if last_used_s_ago is None else round(last_used_s_ago, 3),
            sleep_mode=self.server.sleep_mode,
            adapters=[*(a.name for a in self.server.adapters), *self.runtime_adapters],
            api_key=self.engines[0].spec.api_key or None,
            kv_events={e.url: e.spec.kv_events for e in self.engines if e.spec.kv_events},
            expected_s=expected_s,
        )

    def sample(self, page_cache: Residency, demand: int) -> ModelSample:
        """What the metrics collector reads of this model at scrape time."""
        by_state: dict[EngineState, int] = {}
        for e in self.engines:
            by_state[e.state] = by_state.get(e.state, 0) + 1
        return ModelSample(
            name=self.name,
            state=self.state,
            restarts=self.restarts(),
            engines_by_state=by_state,
            cache_total=page_cache.bytes_total,
            cache_resident=page_cache.bytes_resident,
            demand=demand,
            gpus=sum(len(e.gpus) for e in self.holding()),
        )


def engine_info(e: Engine) -> EngineInfo:
    uptime = e.uptime_s
    starting = e.starting_since if e.state is EngineState.STARTING else None
    return EngineInfo(
        id=e.id,
        state=e.state.value,
        pid=e.pid,
        port=e.port,
        url=e.url,
        gpus=list(e.gpus),
        uptime_s=None if uptime is None else round(uptime, 3),
        restarts=e.restarts,
        last_error=e.last_error,
        last_startup_s=None if e.last_startup_s is None else round(e.last_startup_s, 4),
        starting_for_s=None if starting is None else round(time.monotonic() - starting, 3),
    )
