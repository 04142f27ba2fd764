"""One relayed stream's state and steps (`RelayedStream`), run by `stream_relay` either way:
pushed (the server's task awaits the upstream and sends each chunk on) or pulled as an
iterator (see `stream_relay`'s module doc for both and the invariants they keep)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ..balancing.replica import Replica
from ..cluster.routing import ModelRoute
from ..core import sse
from ..core.call import Call
from ..core.reply import Write
from ..metrics import GatewayMetrics
from .health import HealthMonitor
from .http1.protocol import Connection
from .idle_watch import IdleWatch
from .sse_check import MalformedStream, SseCheck
from .usage import TAIL_BYTES, usage_from_tail

_SSE = "text/event-stream"
_RECENT = 32  # chunks kept before they are joined into the tail
_DONE_TAIL = b"data: [DONE]\n\n"


class ClientGone(Exception):
    """Set on the upstream reader when the client disconnects: the relay stops reading."""


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
        self._settled = False
        self._problem = ""
        # push only: the client's response has ended (with `[DONE]`, see `push`), or the
        # client left: nothing more is written
        self.client_done = False

    # ---- the steps -------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        """The part of an upstream chunk that may go out now. A malformed event: the good
        prefix, and the stream fails (`malformed()`: nothing more is read)."""
        recent = self._recent
        recent.append(chunk)
        if len(recent) > _RECENT:
            self._recent = [b"".join(recent)[-TAIL_BYTES:]]
        check = self._check
        if check is None:
            return chunk
        out = check.feed(chunk)
        if check.bad:
            self.fail(MalformedStream())
        return out

    def malformed(self) -> bool:
        return self._check is not None and self._check.bad

    async def next(self) -> bytes | None:
        """The upstream's next data: everything that came since the last call, joined
        (`Connection.take`); b"": the body ended. None: the read failed (`fail` has recorded
        what that means). Only the upstream's failures are caught here: one of the client's
        side (a send) propagates to the server."""
        resp, watch = self.resp, self._watch
        try:
            taken = resp.take()
            while taken is None:
                watch.reading()  # the idle clock runs only while we wait on the upstream
                await resp.wait()
                watch.done()
                taken = resp.take()
        except (ClientGone, TimeoutError, OSError) as exc:
            self.fail(exc)
            return None
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
            self.client_done = True  # nobody to write to
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
        """Settle what the stream holds (once: later calls return b""); the final error event
        to send, or b""."""
        if self._settled:
            return b""
        self._settled = True
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
            chunk: bytes | None = self._first
            while chunk:
                out = self.feed(chunk)
                if out:
                    yield out
                chunk = None if self.malformed() else await self.next()
            if chunk is not None:  # b"": the upstream's clean end
                out = self.end()
                if out:
                    yield out
        finally:
            final = self.settle()
        if final:
            yield final

    # ---- pushed: written from this task ---------------------------------------------------
    async def push(self, write: Write) -> None:
        """Write the stream from the calling task (the edge's, the server's), the last part
        with `more=False`. Each turn takes everything the upstream sent since the last one
        (`next`: one chunk, or several joined when they came while the task was away, e.g.
        waiting on a slow client) and writes its whole events as one part. A chat stream's
        `[DONE]` is its last event, so it ends the client's response in the same write (one
        write less per stream); the upstream's own end is still read, to reuse the connection,
        and whatever else it sends after `[DONE]` is not the client's any more."""
        final = b""
        try:
            chunk: bytes | None = self._first
            while chunk:
                out = self.feed(chunk)
                if out and not self.client_done:
                    last = self._expects_done and out.endswith(_DONE_TAIL)
                    self.client_done = last
                    await write(out, not last)
                chunk = None if self.malformed() else await self.next()
            if chunk is not None:  # b"": the upstream's clean end
                out = self.end()
                if out and not self.client_done:
                    last = self._expects_done and out.endswith(_DONE_TAIL)
                    self.client_done = last
                    await write(out, not last)
        finally:
            final = self.settle()
        if not self.client_done:  # the end, with the error event when the stream failed
            await write(final, False)
