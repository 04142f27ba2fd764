"""The gateway's side of the supervisor: one owner for everything the two exchange.

`SupervisorLink` owns the sync loop (every `gateway.routing_refresh_s`, faster while an engine
drains or an ensure is pending: report demand and in-flight requests per engine, apply the model
table it gets back), the demand counters, and the ensure calls (concurrent requests for one cold
model share one). It talks through the one control client, `orchestra.control.ControlClient`,
which sends the admin token. The gateway never imports supervisor code.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable

from orchestra.control import ControlClient, ControlError, ModelStatus
from orchestra.gateway.balancer import Replica
from orchestra.gateway.errors import Unavailable, UpstreamTimeout
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.routing import ModelRoute, RoutingTable

log = logging.getLogger(__name__)

_FAST_SYNC_S = 0.05  # while an engine drains or an ensure waits: the drain waits on our report


class SupervisorLink:
    def __init__(
        self,
        client: ControlClient,
        table: RoutingTable,
        metrics: GatewayMetrics,
        *,
        refresh_s: float,
        ensure_timeout_s: float,
        on_ready: Callable[[ModelRoute, Replica], None] = lambda route, replica: None,
        on_status: Callable[[ModelStatus], None] = lambda status: None,  # e.g. its adapters
    ) -> None:
        self.client = client
        self.table = table
        self.gateway_id = uuid.uuid4().hex  # one per gateway process (each worker its own)
        self._metrics = metrics
        self._refresh_s = refresh_s
        self._ensure_timeout_s = ensure_timeout_s
        self._on_ready = on_ready
        self._on_status = on_status
        self._demand: collections.Counter[str] = collections.Counter()
        self._ensuring: dict[str, asyncio.Future[None]] = {}
        self._reachable = True

    # ---- demand ---------------------------------------------------------------------------------
    def count(self, model: str) -> None:
        """One request for `model` (rotation decides on these counts)."""
        self._demand[model] += 1

    # ---- the sync loop --------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await self.sync_once()
            fast = self.table.draining or self._ensuring
            await asyncio.sleep(_FAST_SYNC_S if fast else self._refresh_s)

    async def sync_once(self) -> None:
        report = self.table.report()
        demand, self._demand = dict(self._demand), collections.Counter()
        report.demand = demand
        try:
            statuses = await self.client.sync(self.gateway_id, report)
        except ControlError as exc:
            self._demand.update(demand)  # keep them for the next report
            if self._reachable:
                log.warning("cannot sync with the supervisor: %s", exc.message)
            self._reachable = False
            self.table.supervisor_lost()
            return
        if not self._reachable:
            log.info("supervisor at %s is reachable again", self.client.base_url)
        self._reachable = True
        for status in statuses:
            self.table.apply(status)
            self._on_status(status)

    # ---- ensure ---------------------------------------------------------------------------------
    async def ensure(self, route: ModelRoute) -> None:
        """Ask the supervisor to make `route`'s model ready; joins an ensure under way."""
        pending = self._ensuring.get(route.name)
        if pending is None:
            pending = asyncio.ensure_future(self._ensure(route))
            self._ensuring[route.name] = pending
            pending.add_done_callback(lambda _: self._ensuring.pop(route.name, None))
        # shield: one waiter leaving (client gone) must not cancel the swap for the others.
        await asyncio.shield(pending)

    async def reensure(self, route: ModelRoute) -> bool:
        """Safety net after every replica of a managed model failed to connect (gone since the
        table was read): make it ready again. False when it cannot be."""
        try:
            await self.ensure(route)
        except (Unavailable, UpstreamTimeout):
            return False
        return True

    async def _ensure(self, route: ModelRoute) -> None:
        started = time.perf_counter()
        try:
            status = await self.client.ensure(route.name, self._ensure_timeout_s)
        except ControlError as exc:
            if exc.status == 504:
                raise UpstreamTimeout(
                    f"model `{route.name}` did not become ready: {exc.message}"
                ) from None
            raise Unavailable(f"model `{route.name}` is not available: {exc.message}") from None
        self.table.apply(status)
        for replica in route.replicas:  # the supervisor has just seen them answer /health
            self._on_ready(route, replica)
        self._metrics.ensure_seconds.labels(route.name).observe(time.perf_counter() - started)
        if not route.replicas:
            raise Unavailable(f"model `{route.name}` is {status.state} with no ready upstream")
