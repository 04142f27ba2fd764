"""Per-model idle unload (`idle_unload_s`, like llama-swap's `ttl` and Ollama's `keep_alive`).

Every `supervisor.idle_check_interval_s`, a resident model with `idle_unload_s` set that nobody
has asked for in that long (no ensure, no request counted by a gateway, nothing in flight) and
that is not mid-swap is evicted like any victim: drained, then put to sleep when it can sleep,
else stopped. Its weights are then read back into the page cache (when `preload` is on for it),
so that the next start is a warm one. A model never used counts from when it became ready.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from orchestra.loops import every

from .demand import Demand
from .gateways import GatewayReports
from .model import Model
from .placement import Placer
from .preloader import Preloader

log = logging.getLogger(__name__)


class IdleUnloader:
    def __init__(
        self,
        models: dict[str, Model],
        demand: Demand,
        reports: GatewayReports,
        placer: Placer,
        preloader: Preloader,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._models = models
        self._demand = demand
        self._reports = reports
        self._placer = placer
        self._preloader = preloader
        self._clock = clock

    def idle_for(self, model: Model) -> float | None:
        """Seconds since `model` was last wanted, or None when it is not resident."""
        if not model.ready() or model.resident_since is None:
            return None
        since_use = self._demand.seconds_since_use(model.name)
        since_ready = self._clock() - model.resident_since
        return since_ready if since_use is None else min(since_use, since_ready)

    def due(self) -> list[Model]:
        out = []
        for model in self._models.values():
            limit = model.server.idle_unload_s
            idle = self.idle_for(model)
            if limit is None or idle is None or idle < limit:
                continue
            if self._placer.busy(model) or model.draining:
                continue
            if self._reports.inflight(e.url for e in model.ready()) > 0:
                continue
            out.append(model)
        return out

    async def check(self) -> list[str]:
        """Evict every model that is due; returns their names."""
        done = []
        for model in self.due():
            log.info(
                "%s unused for idle_unload_s=%gs: evicting", model.name, model.server.idle_unload_s
            )
            await self._placer.evict_now(model, "idle")
            done.append(model.name)
            if model.server.preload and not model.sleeping():
                await self._preloader.preload([model.name])  # keep the next start warm
        return done

    async def run(self, interval_s: float) -> None:
        await every("idle unload", interval_s, self.check, first_after_s=interval_s)
