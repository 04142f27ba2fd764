"""Swapping a model in: one task per model, joined by every ensure of it.

Concurrent ensures of one model join one swap task, and a failed swap raises the same error in
every waiter; a waiter that times out (or gives up) leaves the swap running for the others. The
swap itself asks the placer for GPUs (evicting others if needed) and waits for the first of the
model's engines to be READY: a woken replica serves while a cold one is still starting (the
others keep coming up; a late failure is logged and left to the engine's own backoff).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable

from .errors import EngineError, EnsureTimeout, SupervisorError
from .metrics import SupervisorMetrics
from .model import Model
from .placement import Placer

log = logging.getLogger(__name__)


class Swaps:
    def __init__(self, placer: Placer, metrics: SupervisorMetrics) -> None:
        self._placer = placer
        self._metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def running(self, name: str) -> bool:
        return name in self._tasks

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    async def join(self, model: Model, timeout_s: float, force: bool, reset: bool) -> None:
        """Wait for `model`'s swap (started now unless one is under way) up to `timeout_s`."""
        task = self._tasks.get(model.name)
        if task is None:
            task = asyncio.create_task(
                self._swap_in(model, force, reset), name=f"swap:{model.name}"
            )
            self._tasks[model.name] = task
            task.add_done_callback(functools.partial(self._done, model.name))
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            raise EnsureTimeout(
                f"{model.name} is not ready after {timeout_s:g}s (state {model.state.value})"
            ) from None

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if not task.cancelled():
            task.exception()  # retrieved: a swap nobody waits for any more must not warn

    async def _swap_in(self, model: Model, force: bool, reset: bool) -> None:
        began = time.monotonic()
        self._placer.set_hot(model, True)
        tracing = self._placer.tracing
        try:
            # A child of the ensure that started it (the task copied its context: the gateway's
            # ensure span, from the call's traceparent); later joiners wait on the same swap.
            with tracing.span("swap") as span:
                span.set_attribute("orchestra.model", model.name)
                with tracing.span("place"):  # plan, evict (drain, stop), queue the starts
                    waits = await self._placer.place(model, force, reset)
                with tracing.span("start and ready"):
                    await _first_ready(model, waits)
        except SupervisorError:
            self._metrics.swap_failures.labels(model.name).inc()
            if not model.holding():
                self._placer.set_hot(model, False)
            raise
        self._metrics.swaps.labels(model.name).inc()
        self._metrics.swap_seconds.observe(time.monotonic() - began)


async def _first_ready(model: Model, waits: list[Awaitable[None]]) -> None:
    """Return once one of `model`'s engines is READY; raise the first error if none will be."""
    pending = {asyncio.ensure_future(w) for w in waits}
    errors: list[BaseException] = []
    try:
        while pending and not model.ready():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            errors += [e for t in done if (e := t.exception()) is not None]
    except asyncio.CancelledError:
        for task in pending:
            task.cancel()
        raise
    for task in pending:
        task.add_done_callback(functools.partial(_late, model.name))
    if not model.ready():
        first = next((e for e in errors if isinstance(e, SupervisorError)), None)
        raise first or EngineError(f"{model.name}: no engine is ready")


def _late(name: str, task: asyncio.Future[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("%s: a replica brought up after the first failed: %s", name, exc)
