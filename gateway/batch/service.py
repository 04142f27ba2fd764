"""The batch feature as one object built in the gateway's lifespan: store, pacer, runner.

`app.py` builds it in the lifespan (`BatchService.start(gw, pool, endpoints)`, with the route
table's batch endpoints) and stops it on the way out (`await batch.stop()`); the Files and
Batches endpoints are entries of the route table.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..core.errors import Unavailable
from ..core.traits import Traits
from ..upstream.http1.pool import Pool
from .concurrency import Pacer
from .runner import BatchRunner
from .send import InProcessSender
from .store import Store

if TYPE_CHECKING:
    from ..container import Gateway

log = logging.getLogger(__name__)


class BatchService:
    """Opens the store on first use (or at start when it already holds batches to resume), so
    a gateway that never sees a batch writes nothing; one gateway process owns a store (an
    exclusive lock on `<dir>/lock`)."""

    def __init__(self, gw: Gateway, pool: Pool, endpoints: Mapping[str, Traits]) -> None:
        self.config = gw.config.batch
        # The model calls a batch may target (the route table's `batch` trait), with the
        # traits their rows' calls carry.
        self.endpoints = dict(endpoints)
        self._gw = gw
        self._pool = pool  # the engines' client: the pacer's gauge scrapes
        self._lock: IO[bytes] | None = None
        self._store: Store | None = None
        self.runner: BatchRunner | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, gw: Gateway, pool: Pool, endpoints: Mapping[str, Traits]) -> BatchService:
        service = cls(gw, pool, endpoints)
        if service._db_path.exists():
            service.open()
        return service

    @property
    def _db_path(self) -> Path:
        return self.config.db_path or self.config.dir / "batch.sqlite3"

    @property
    def store(self) -> Store:
        return self._store if self._store is not None else self.open()

    def open(self) -> Store:
        if self._store is not None:
            return self._store
        self.config.dir.mkdir(parents=True, exist_ok=True)
        lock = (self.config.dir / "lock").open("wb")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise Unavailable(
                f"the batch store {self.config.dir} is in use by another gateway process"
            ) from None
        self._lock = lock
        gw, config = self._gw, self.config
        store = Store(config.dir, config.db_path)
        pacer = Pacer(
            gw.table,
            self._pool,
            config.min_concurrency,
            max(config.min_concurrency, config.max_concurrency),
            gw.config.gateway.timeouts.health_probe_s,
            gauges=gw.health.gauges,  # one scrape per replica, shared with the health monitor
        )
        self.runner = BatchRunner(
            store,
            InProcessSender(gw, config.priority, config.charge_keys, self.endpoints),
            pacer,
            config,
            lambda name: gw.models.serves(name, gw.table.get),
            gw.tracing,
        )
        self._store = store
        self._task = asyncio.create_task(self._loop(self.runner), name="batch-runner")
        return store

    def wake(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    @staticmethod
    async def _loop(runner: BatchRunner) -> None:
        while True:
            try:
                await runner.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch runner failed; restarting it")
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.runner is not None:
            await self.runner.stop()
        if self._store is not None:
            self._store.close()
        if self._lock is not None:
            self._lock.close()
