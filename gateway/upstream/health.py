"""Replica health: passive marking (the proxy reports failures) and active probing back.

A replica marked down leaves rotation for a cool-down; afterwards `/health` is probed each
`health_check_interval_s` until it answers 200. For load-aware models the same loop sets each
healthy replica's `load` from vLLM's queue gauges, read through `gauges.GaugeReader` (shared
with batch pacing: a reading younger than one interval is reused, not scraped again).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..balancing.replica import Replica
from ..cluster.routing import ModelRoute, RoutingTable
from ..metrics import GatewayMetrics
from .gauges import GaugeReader
from .http1.pool import Pool

log = logging.getLogger(__name__)

_LOAD_SCRAPED = frozenset({"load_aware", "prefix_aware", "session", "kv_aware"})  # read `load`


class HealthMonitor:
    def __init__(
        self,
        table: RoutingTable,
        pool: Pool,
        metrics: GatewayMetrics,
        *,
        cooldown_s: float,
        interval_s: float,
        probe_timeout_s: float,
        gauges: GaugeReader | None = None,
    ) -> None:
        """`gauges`: the reader to share with other users of vLLM's gauges (batch pacing);
        None builds this monitor's own, with `probe_timeout_s` per scrape."""
        self.table = table
        self.metrics = metrics
        self.cooldown_s = cooldown_s
        self.interval_s = interval_s
        self._pool = pool
        self._probe_timeout_s = probe_timeout_s
        self.gauges = gauges if gauges is not None else GaugeReader(pool, probe_timeout_s)

    def mark_down(
        self, route: ModelRoute, replica: Replica, reason: str, retry_after_s: float | None = None
    ) -> None:
        if replica.healthy:
            log.warning("upstream %s for %s marked down: %s", replica.url, route.name, reason)
        replica.healthy = False
        replica.down_reason = reason
        replica.retry_at = time.monotonic() + max(self.cooldown_s, retry_after_s or 0.0)
        self.metrics.upstream_healthy.labels(route.name, replica.url).set(0)

    def mark_up(self, route: ModelRoute, replica: Replica) -> None:
        if not replica.healthy:
            log.info("upstream %s for %s is back", replica.url, route.name)
        replica.healthy = True
        replica.down_reason = ""
        self.metrics.upstream_healthy.labels(route.name, replica.url).set(1)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check_once()

    async def check_once(self) -> None:
        now = time.monotonic()
        jobs = []
        urls: set[str] = set()
        for route in self.table.routes.values():
            for replica in route.replicas:
                urls.add(replica.url)
                if not replica.healthy and now >= replica.retry_at:
                    jobs.append(self._probe(route, replica))
                elif replica.healthy and route.policy in _LOAD_SCRAPED:
                    jobs.append(self._scrape_load(replica))
        self.gauges.forget(urls)  # engines that left the table (managed models move)
        if jobs:
            await asyncio.gather(*jobs)

    async def answers(self, url: str) -> bool:
        """One `/health` probe of an engine URL."""
        try:
            reply = await self._pool.fetch(url, "GET", "/health", {}, b"", self._probe_timeout_s)
        except OSError:  # refused, lost, timed out (TimeoutError is one)
            return False
        return reply.status == 200

    async def _probe(self, route: ModelRoute, replica: Replica) -> None:
        if await self.answers(replica.url):
            self.mark_up(route, replica)
        else:
            replica.retry_at = time.monotonic() + self.cooldown_s

    async def _scrape_load(self, replica: Replica) -> None:
        reading = await self.gauges.read(replica.url, max_age_s=self.interval_s)
        if reading is not None:  # a failed scrape keeps the last value
            replica.load = reading.load
