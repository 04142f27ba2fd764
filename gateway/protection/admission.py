"""Admission control: per-model max in-flight requests and a bounded, prioritised wait queue.

Below the limit admission is one counter increment. Over it, a request waits in a heap ordered by
(priority, arrival) — lower priority values first, like vLLM's `priority` — for at most
`queue_timeout_s`; with the queue full (or the wait over) it gets `Overloaded` (429 +
Retry-After). A released slot is handed straight to the first live waiter, so no newcomer can
overtake the queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

from orchestra.config import OrchestraConfig

from ..core.errors import BadRequest, Overloaded
from ..core.reply import Reply


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class ModelGate:
    def __init__(
        self, name: str, max_inflight: int, max_queue: int, timeout_s: float, retry_after_s: float
    ) -> None:
        self.name = name
        self.max_inflight = max_inflight
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.inflight = 0
        self.queued = 0  # live waiters (the heap may also hold abandoned ones)
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()

    def _overloaded(self, why: str) -> Overloaded:
        return Overloaded(
            f"model `{self.name}` is overloaded ({why}); retry later",
            retry_after_s=self.retry_after_s,
        )

    async def acquire(self, priority: int = 0) -> None:
        if self.inflight < self.max_inflight and self.queued == 0:
            self.inflight += 1
            return
        if self.queued >= self.max_queue:
            raise self._overloaded(f"{self.inflight} in flight, {self.queued} queued")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, _Waiter(priority, next(self._seq), future))
        self.queued += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                await future
        except BaseException as exc:
            if future.done() and not future.cancelled():
                self.release()  # the slot arrived as we gave up: pass it on
            else:
                future.cancel()
                self.queued -= 1
            if isinstance(exc, TimeoutError):
                raise self._overloaded(f"waited {self.timeout_s:g}s in the queue") from None
            raise

    def release(self) -> None:
        while self._heap:
            waiter = heapq.heappop(self._heap)
            if not waiter.future.done():
                self.queued -= 1
                waiter.future.set_result(None)  # the slot moves to the waiter: inflight stays
                return
        self.inflight -= 1


class Admission:
    """The gates of the models that have `max_inflight`; other models are not counted at all."""

    def __init__(self, config: OrchestraConfig) -> None:
        gw = config.gateway
        self.priority_header = gw.priority_header.lower()
        self.gates: dict[str, ModelGate] = {
            s.name: ModelGate(
                s.name, s.max_inflight, s.max_queue, gw.queue_timeout_s, gw.overload_retry_after_s
            )
            for s in config.all_servers
            if s.max_inflight is not None
        }

    def gate(self, model: str) -> ModelGate | None:
        return self.gates.get(model)

    def priority(self, value: str | None) -> int:
        if value is None:
            return 0
        try:
            return int(value)
        except ValueError:
            raise BadRequest(
                f"header {self.priority_header} must be an integer, got {value[:32]!r}",
                param=self.priority_header,
            ) from None


def release_when_done(reply: Reply, gate: ModelGate) -> Reply:
    """Release `gate` once `reply` is finished: now for a whole body, else when its stream
    closes (done, client gone, cancelled by the drain deadline: the reply closes once)."""
    if reply.streamed:
        reply.on_close(gate.release)
    else:
        gate.release()
    return reply
