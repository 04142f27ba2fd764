"""One relayed stream's state and steps (`RelayedStream`), run by `stream_relay` either way:
pushed from the upstream's read callback when the server sends it, or pulled as an iterator
(see `stream_relay`'s module doc for both and the invariants they keep)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from starlette.types import Message, Send

from ..balancing.replica import Replica
from ..cluster.routing import ModelRoute
from ..core import sse
from ..core.call import Call
from ..metrics import GatewayMetrics
from .eager_send import Rest, send_now
from .health import HealthMonitor
from .http1.protocol import Connection
from .idle_watch import IdleWatch
from .sse_check import MalformedStream, SseCheck
from .usage import TAIL_BYTES, usage_from_tail

_SSE = "text/event-stream"
_RECENT = 32  # chunks kept before they are joined into the tail


class ClientGone(Exception):
    """Set on the upstream reader when the client disconnects: the relay stops reading."""


def body_message(data: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


@dataclass(frozen=True)
class RelaySettings:
    """What every stream shares: where failures and counts go, and the read bounds."""

    health: HealthMonitor
    metrics: GatewayMetrics
    idle_read_s: float
    total_s: float


class RelayedStream:
    """One stream: what the attempt handed over, the SSE check, the tail, the timer."""

    def __init__(
        self,
        relay: RelaySettings,
        call: Call,
        route: ModelRoute,
        replica: Replica,
        resp: Connection,
        first: bytes,
        deadline: float,
    ) -> None:
        self._relay = relay
        self._call = call
        self._route = route
        self._replica = replica
        self.resp = resp
        self._first = first
        self._recent: list[bytes] = []  # the last chunks, for the usage and [DONE] (see feed)
        sse = resp.headers.get("content-type", "").startswith(_SSE)  # no header: not SSE
        # Chat and completions streams end with `data: [DONE]`; streams of named events (the
        # Responses and Anthropic Messages APIs: `event: ...` lines) end with their last event.
        self._expects_done = sse and not first.lstrip().startswith(b"event:")
        self._check = SseCheck() if sse else None
        self._watch = IdleWatch(relay.idle_read_s, deadline, resp.set_exception)
        self._finished = False
        self._problem = ""
        # push only: the client's response ended with `[DONE]` (see `_message`)
        self.client_done = False
        # push only: where the sink sends, what it left to the task
        self._send: Send | None = None
        self._rest: Rest | None = None
        self._error: BaseException | None = None

    # ---- the steps -------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        """The part of an upstream chunk that may go out now (`malformed` tells what follows)."""
        recent = self._recent
        recent.append(chunk)
        if len(recent) > _RECENT:
            self._recent = [b"".join(recent)[-TAIL_BYTES:]]
        return chunk if self._check is None else self._check.feed(chunk)

    def malformed(self) -> bool:
        return self._check is not None and self._check.bad

    async def next(self) -> bytes:
        """The next upstream chunk (b"": the body ended); raises the read's failure."""
        resp, watch = self.resp, self._watch
        taken = resp.take()
        while taken is None:
            watch.reading()
            await resp.wait()
            watch.done()
            taken = resp.take()
        return taken

    def end(self) -> bytes:
        """The body ended: what is still to go out (an unterminated last event)."""
        self._finished = True
        if self._expects_done and b"[DONE]" not in b"".join(self._recent[-3:])[-64:]:
            self._problem = "upstream closed the stream before [DONE]"
        check = self._check
        return check.flush() if check is not None and check.pending else b""

    def fail(self, exc: Exception) -> None:
        """What a failure after the first byte means for the client and the replica."""
        health, route, replica = self._relay.health, self._route, self._replica
        if isinstance(exc, ClientGone):
            return  # the upstream request is cancelled in `settle`, with its connection
        if isinstance(exc, MalformedStream):
            self._problem = "upstream sent a malformed SSE event"
            self._recent = [b"\n\n"]  # only whole, valid events went out
            health.mark_down(route, replica, "malformed SSE")
        elif isinstance(exc, TimeoutError):
            if self._watch.expired:  # our bound, not the replica's fault: it stays in rotation
                self._problem = f"upstream request ran past its {self._relay.total_s:g}s limit"
            else:
                self._problem = f"upstream sent nothing for {self._relay.idle_read_s:g}s"
                health.mark_down(route, replica, "idle read timeout")
        else:  # OSError
            self._problem = f"upstream connection lost mid-stream: {exc.__class__.__name__}"
            health.mark_down(route, replica, "lost mid-stream")

    def settle(self) -> bytes:
        """Settle what the stream holds (once); the final error event to send, or b""."""
        self._watch.cancel()
        tail = b"".join(self._recent)[-TAIL_BYTES:]
        self._replica.outstanding -= 1
        if self._finished:
            self.resp.release()
        else:
            self.resp.close()  # drop the connection: the upstream request is cancelled with it
        metrics, model = self._relay.metrics, self._call.model
        self._call.usage(metrics, usage_from_tail(tail))
        metrics.model(model).inflight.dec()
        if not self._problem:
            return b""
        metrics.stream_errors.labels(model).inc()
        return sse.error_event(
            self._call.dialect, self._problem, code="stream_interrupted", after=tail
        )

    # ---- pulled: an async iterator ---------------------------------------------------------
    async def pull(self) -> AsyncGenerator[bytes, None]:
        final = b""
        try:
            chunk = self._first
            while chunk:
                out = self.feed(chunk)
                if out:
                    yield out
                if self.malformed():
                    raise MalformedStream
                chunk = await self.next()
            out = self.end()
            if out:
                yield out
        except (ClientGone, MalformedStream, TimeoutError, OSError) as exc:
            self.fail(exc)
        finally:
            final = self.settle()
        if final:
            yield final

    # ---- pushed: sent from the upstream's read callback ------------------------------------
    def _message(self, out: bytes) -> Message | None:
        """The body message for `out`, or None: nothing to send. A chat stream's `[DONE]` is
        its last event, so it ends the client's response in the same write (one write less per
        stream); the upstream's own end is still read, to reuse the connection, and whatever
        else it sends after `[DONE]` is not the client's any more."""
        if self.client_done or not out:
            return None
        if self._expects_done and out.endswith(b"data: [DONE]\n\n"):
            self.client_done = True
            return body_message(out, more=False)
        return body_message(out)

    async def push(self, send: Send) -> None:
        final = b""
        try:
            chunk = self._first
            while chunk:
                message = self._message(self.feed(chunk))
                if message is not None:
                    await send(message)
                if self.malformed():
                    raise MalformedStream
                chunk = await self._pushed(send)
            message = self._message(self.end())
            if message is not None:
                await send(message)
        except (ClientGone, MalformedStream, TimeoutError, OSError) as exc:
            self.fail(exc)
        finally:
            final = self.settle()
        if final and not self.client_done:  # after `[DONE]` the client has its whole answer
            await send(body_message(final))

    async def _pushed(self, send: Send) -> bytes:
        """Waits while the sink sends what comes; the next chunk it left to the task (b"": the
        body ended). Raises the read's failure, or the sink's."""
        resp, watch = self.resp, self._watch
        self._send = send
        while True:
            taken = resp.take()
            if taken is not None:
                return taken
            resp.sink = self._sink
            watch.reading()
            try:
                await resp.wait()
            finally:
                resp.sink = None
                watch.done()
            rest, self._rest = self._rest, None
            if rest is not None:
                await rest  # the client's buffer was full: the rest of that send
            error, self._error = self._error, None
            if error is not None:
                raise error

    def _sink(self, chunk: bytes) -> bool:
        """In the connection's read callback, while the task waits: send `chunk` on. True
        hands back to the task: a send that must wait, a malformed event, a failure."""
        self._watch.reading()  # data came: the idle clock starts again
        try:
            message = self._message(self.feed(chunk))
            if message is not None:
                assert self._send is not None
                self._rest = send_now(self._send, message)
            if self.malformed():
                self._error = MalformedStream()
        except Exception as exc:  # raised in the task, as if the task had sent
            self._error = exc
        return self._rest is not None or self._error is not None
