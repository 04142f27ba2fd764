"""Relaying one upstream stream to the client once its first chunk is in (`Proxy._attempt`
decided everything before that: status, retries, failover).

Invariants:
- Bytes go out as they arrive, never re-encoded; with SSE only whole events whose `data:` is
  JSON (or `[DONE]`) are released (`sse_check`). After the first byte a failure cannot change
  the status any more: it becomes one final `data: {"error": ...}` event.
- The stream owns what the attempt handed over and settles each exactly once, in `finally`:
  the replica's `outstanding`, the model's in-flight gauge, the upstream connection (released
  for reuse after a clean end, closed otherwise: that cancels the upstream request), and the
  usage read from the stream's tail.
- A client that disconnects stops the upstream read at once (`ClientGone` set on the reader).
- An upstream that sends nothing for `idle_read_s` fails the read, and so does a stream still
  running at the request's deadline (`total_s` after it was sent): `IdleWatch`, one timer per
  stream for both, not one per chunk.

The cheap parts (`IdleWatch`, `RelayResponse`) replace per-chunk costs measured at 256
concurrent streams (py-spy, `python -m bench --py-spy`): an `asyncio.timeout` around every read
(enter, reschedule, exit: ~9% of the gateway's CPU) and Starlette's per-stream anyio task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from orchestra.protocol import error_json

from ..balancing.replica import Replica
from ..cluster.routing import ModelRoute
from ..metrics import GatewayMetrics
from ..pipeline.call import Call
from .health import HealthMonitor
from .http1.protocol import Connection
from .sse_check import MalformedStream, SseCheck
from .usage import TAIL_BYTES, usage_from_tail

_SSE = "text/event-stream"
_RECENT = 32  # chunks kept before they are joined into the tail


class ClientGone(Exception):
    """Set on the upstream reader when the client disconnects: the relay stops reading."""


class IdleWatch:
    """Fails `fail` with TimeoutError when a read has waited `idle_s`, or once the stream is
    past its `deadline` (loop time: the request's `total_s` bound).

    One timer per stream that re-arms itself, instead of a timeout context per chunk (the
    upstream connection's reads have no timer of their own):
    the relay only stores the time a read starts (`reading()`) and clears it when data came
    (`done()`). The timer fires at most once per `idle_s`, and at the deadline.
    """

    __slots__ = ("_deadline", "_fail", "_handle", "_idle", "_loop", "expired", "since")

    def __init__(
        self, idle_s: float, deadline: float, fail: Callable[[BaseException], None]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle = idle_s
        self._deadline = deadline
        self._fail = fail
        self.since = 0.0  # loop time the current read started; 0 = not reading
        self.expired = False  # the deadline failed the stream (not an idle upstream)
        self._handle = self._loop.call_at(min(self._loop.time() + idle_s, deadline), self._check)

    def reading(self) -> None:
        self.since = self._loop.time()

    def done(self) -> None:
        self.since = 0.0

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self._deadline:
            self.expired = True
            self._fail(TimeoutError())
            return
        if self.since and now >= self.since + self._idle:
            self._fail(TimeoutError())
            return
        due = self.since + self._idle if self.since else now + self._idle
        self._handle = self._loop.call_at(min(due, self._deadline), self._check)

    def cancel(self) -> None:
        self._handle.cancel()


class RelayResponse(StreamingResponse):
    """A StreamingResponse without the anyio task group: one plain task listens for the
    client's disconnect and calls `on_disconnect` (the relay then stops reading upstream)."""

    def __init__(self, *args: Any, on_disconnect: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_disconnect = on_disconnect
        self._gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._gone = False
        listener = asyncio.ensure_future(self._listen(receive))
        try:
            start = {"type": "http.response.start", "status": self.status_code}
            await send({**start, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            listener.cancel()
        if not self._gone:  # a client that left gets no end (and is counted as gone)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _listen(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                self.on_disconnect()
                return


class StreamRelay:
    def __init__(
        self, health: HealthMonitor, metrics: GatewayMetrics, idle_read_s: float, total_s: float
    ) -> None:
        self._health = health
        self._metrics = metrics
        self._idle_read_s = idle_read_s
        self._total_s = total_s

    def response(
        self,
        call: Call,
        route: ModelRoute,
        replica: Replica,
        resp: Connection,
        first: bytes,
        headers: dict[str, str],
        content_type: str,
        deadline: float,
    ) -> RelayResponse:
        """The client's streaming response; from here on the stream settles what it holds.
        `deadline`: loop time by which the upstream request must be over (its `total_s`)."""
        lease = resp.leases  # the connection goes back to the pool when the stream ends
        return RelayResponse(
            self._relay(call, route, replica, resp, first, deadline),
            headers=headers,
            media_type=content_type,
            on_disconnect=lambda: resp.fail_lease(lease, ClientGone()),
        )

    async def _relay(
        self,
        call: Call,
        route: ModelRoute,
        replica: Replica,
        resp: Connection,
        first: bytes,
        deadline: float,
    ) -> AsyncIterator[bytes]:
        recent = [first]  # the last chunks, for the final usage and [DONE] (joined at the end)
        finished = False
        problem = ""
        sse = resp.headers.get("content-type", "").startswith(_SSE)  # no header: not SSE
        # Chat and completions streams end with `data: [DONE]`; streams of named events (the
        # Responses and Anthropic Messages APIs: `event: ...` lines) end with their last event.
        expects_done = sse and not first.lstrip().startswith(b"event:")
        check = SseCheck() if sse else None
        watch = IdleWatch(self._idle_read_s, deadline, resp.set_exception)
        try:
            chunk = first
            while chunk:
                out = chunk if check is None else check.feed(chunk)
                if out:
                    yield out
                if check is not None and check.bad:
                    raise MalformedStream
                # The fewest frames per chunk: what already came is taken without a wait; else
                # one wait on the connection's own future (no coroutine of its own).
                taken = resp.take()
                while taken is None:
                    watch.reading()
                    await resp.wait()
                    watch.done()
                    taken = resp.take()
                chunk = taken
                recent.append(chunk)
                if len(recent) > _RECENT:
                    recent = [b"".join(recent)[-TAIL_BYTES:]]
            if check is not None and check.pending:
                yield check.flush()
            finished = True
            if expects_done and b"[DONE]" not in b"".join(recent[-3:])[-64:]:
                problem = "upstream closed the stream before [DONE]"
        except ClientGone:
            pass  # the upstream request is cancelled below, with its connection
        except MalformedStream:
            problem = "upstream sent a malformed SSE event"
            recent = [b"\n\n"]  # only whole, valid events went out
            self._health.mark_down(route, replica, "malformed SSE")
        except TimeoutError:
            if watch.expired:  # our bound, not the replica's fault: it stays in rotation
                problem = f"upstream request ran past its {self._total_s:g}s limit"
            else:
                problem = f"upstream sent nothing for {self._idle_read_s:g}s"
                self._health.mark_down(route, replica, "idle read timeout")
        except OSError as exc:
            problem = f"upstream connection lost mid-stream: {exc.__class__.__name__}"
            self._health.mark_down(route, replica, "lost mid-stream")
        finally:
            watch.cancel()
            tail = b"".join(recent)[-TAIL_BYTES:]
            replica.outstanding -= 1
            if finished:
                resp.release()
            else:
                resp.close()  # drop the connection: the upstream request is cancelled with it
            call.usage(self._metrics, usage_from_tail(tail))
            if problem:
                self._metrics.stream_errors.labels(call.model).inc()
            self._metrics.model(call.model).inflight.dec()
        if problem:
            separator = b"" if tail.endswith(b"\n\n") else b"\n\n"
            body = error_json(problem, "upstream_error", "stream_interrupted")
            yield separator + b"data: " + body + b"\n\n"
