"""How many batch rows each model gets in flight: enough to keep vLLM's continuous batching
full, never so many that requests queue inside the engine (where interactive ones would wait
behind batch rows, since the engine serves its queue first come, first served).

Additive increase while the engine's `vllm:num_requests_waiting` is 0, no interactive request
is in flight for the model and batch rows use the whole limit; a cut by half when requests wait
in the engine, when interactive requests are in flight (people first: a smaller batch makes
every decode step faster), or when the gateway refuses a row (429/503).
Without gauges (an upstream that is not vLLM) only the refusals steer it. The gauges come
from `upstream.gauges.GaugeReader`, shared with the health monitor when the caller passes its
reader (`gauges=`): a scrape made for one serves the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..cluster.routing import RoutingTable
from ..upstream.gauges import GaugeReader, Gauges
from ..upstream.http1.pool import Pool

log = logging.getLogger(__name__)


class ModelLimit:
    """An adaptive semaphore for one model's batch rows."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.limit = low  # slow start: a cold model is ensured by the first row alone
        self.inflight = 0
        self.engine_queue = 0.0  # the engine's waiting requests, last time they were read
        self.interactive = 0  # the model's non-batch requests in flight, at that time
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.inflight < self.limit)
            self.inflight += 1

    async def release(self) -> None:
        async with self._changed:
            self.inflight -= 1
            self._changed.notify_all()

    async def _set(self, limit: int) -> None:
        limit = max(self.low, min(self.high, limit))
        if limit != self.limit:
            async with self._changed:
                self.limit = limit
                self._changed.notify_all()

    async def observe(self, gauges: Gauges, interactive: int = 0) -> None:
        """`interactive`: the model's requests in flight that are not batch rows. People
        first: while there are any, the batch shrinks (each decode step is shared by every
        running sequence, so batch rows slow interactive ones even with no engine queue)."""
        self.engine_queue = gauges.waiting
        self.interactive = interactive
        if gauges.waiting > 0 or interactive > 0:
            await self._set(self.limit // 2)
        elif self.inflight >= self.limit:
            await self._set(self.limit + max(1, self.limit // 4))

    async def refused(self) -> None:
        await self._set(self.limit // 2)

    async def succeeded(self) -> None:
        """Growth between gauge reads: a success while the whole limit is in use and the
        engine had no queue and no interactive request."""
        if self.inflight >= self.limit and self.engine_queue == 0 and self.interactive == 0:
            await self._set(self.limit + 1)


class Pacer:
    """One `ModelLimit` per model with batch rows; `poll` reads each model's replicas' gauges
    (fresh ones: each poll scrapes, so a reader shared with the health monitor spares it its
    own scrape of these replicas)."""

    def __init__(
        self,
        table: RoutingTable,
        pool: Pool,
        low: int,
        high: int,
        timeout_s: float,
        *,
        gauges: GaugeReader | None = None,
    ) -> None:
        """`gauges`: the reader to share (the health monitor's `gauges`); None builds one of
        its own on `pool`, `timeout_s` per scrape."""
        self._table = table
        self._gauges = gauges if gauges is not None else GaugeReader(pool, timeout_s)
        self._low, self._high = low, high
        self.limits: dict[str, ModelLimit] = {}

    def limit(self, model: str) -> ModelLimit:
        if model not in self.limits:
            self.limits[model] = ModelLimit(self._low, self._high)
        return self.limits[model]

    async def poll(self) -> None:
        for model, limit in list(self.limits.items()):
            gauges = await self._read(model)
            if gauges is not None:
                await limit.observe(gauges, self._interactive(model, limit))

    def _interactive(self, model: str, limit: ModelLimit) -> int:
        """The gateway's requests in flight for `model` that are not batch rows (an estimate:
        rows waiting out a retry backoff count as in flight)."""
        route = self._table.get(model)
        if route is None:
            return 0
        replicas = [*route.replicas, *getattr(route, "draining", ())]
        return max(0, sum(r.outstanding for r in replicas) - limit.inflight)

    async def _read(self, model: str) -> Gauges | None:
        """The model's healthy replicas' gauges, summed; None when any of them could not be
        read (a partial sum would look like a smaller queue than there is)."""
        route = self._table.get(model)
        if route is None or not route.replicas:
            return None
        healthy = [r.url for r in route.replicas if r.healthy]
        readings = await asyncio.gather(*(self._gauges.read(url) for url in healthy))
        running = waiting = 0.0
        for reading in readings:
            if reading is None:
                return None
            running += reading.running
            waiting += reading.waiting
        return Gauges(running, waiting)


async def acquire_unless(limit: ModelLimit, halt: asyncio.Event) -> bool:
    """Take a slot of `limit`, unless `halt` is set first (then False, holding nothing)."""
    if halt.is_set():
        return False
    acquire = asyncio.create_task(limit.acquire())
    halted = asyncio.create_task(halt.wait())
    try:
        await asyncio.wait({acquire, halted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        halted.cancel()
        if not acquire.done():
            acquire.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await acquire
    if acquire.cancelled():
        return False
    if halt.is_set():
        await limit.release()
        return False
    return True
