"""Relaying one upstream stream to the client once its first chunk is in (`Proxy._attempt`
decided everything before that: status, retries, failover).

Invariants:
- Bytes go out as they arrive, never re-encoded; with SSE only whole events whose `data:` is
  JSON (or `[DONE]`) are released (`sse_check`). After the first byte a failure cannot change
  the status any more: it becomes one final `data: {"error": ...}` event.
- The stream owns what the attempt handed over and settles each exactly once
  (`RelayedStream.settle`, in a `finally`): the replica's `outstanding`, the model's in-flight
  gauge, the upstream connection (released for reuse after a clean end, closed otherwise:
  that cancels the upstream request), and the usage read from the stream's tail.
- A client that disconnects stops the upstream read at once (`ClientGone` set on the reader).
  A send to the client that raises (a server that reports a closed connection so) settles the
  stream and propagates as it is: the client's side, not the replica's fault.
- An upstream that sends nothing for `idle_read_s` fails the read, and so does a stream still
  running at the request's deadline (`total_s` after it was sent): `IdleWatch`, one timer per
  stream for both, not one per chunk.

Two ways to run a stream, with the same steps (`relayed_stream.RelayedStream`: `feed`, `end`,
`fail`, `settle`):
- sent by the server (`RelayResponse.__call__`, the usual case): `RelayedStream.push`, a plain
  loop in the server's task for the request: await the upstream connection for what came
  (`Connection.take`/`wait`: everything since the last wake-up, joined), send its whole events
  with one `await send(...)`, again. A chat stream's `[DONE]` ends the client's response
  (`more_body: False` with it: one write less); the upstream's end is still read, so the
  connection is reused.
- read as an iterator (`body_iterator`: in-process calls, wrappers that look at the bytes):
  `RelayedStream.pull`, an async generator with the same steps.
Either way a second task per stream awaits `receive()` for the client's disconnect (uvicorn's
`send` to a client that left returns without a word, so the relay cannot tell by sending).

Why no async generator when pushed: at 256 streams of 20 tokens/s each chunk arrives alone, and
a generator between the relay and the send was one more resumed frame chain per chunk
(bench/results/issue22/README.md, bench/results/issue30/README.md have the figures).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ..balancing.replica import Replica
from ..cluster.routing import ModelRoute
from ..core.call import Call
from ..metrics import GatewayMetrics
from .health import HealthMonitor
from .http1.protocol import Connection
from .relayed_stream import ClientGone, RelayedStream, RelaySettings

log = logging.getLogger(__name__)


class _Pulled:
    """The stream as an async iterable (`body_iterator`): its generator (`RelayedStream.pull`)
    is made the first time something iterates it. A pushed stream never does, and making and
    closing a generator per stream costs its creation, the loop's first-iteration hook and a
    close (~3% of the Python a 1-token stream runs, cProfile)."""

    __slots__ = ("_made", "_stream")

    def __init__(self, stream: RelayedStream) -> None:
        self._stream = stream
        self._made: AsyncGenerator[bytes, None] | None = None

    @property
    def untouched(self) -> bool:
        return self._made is None

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        if self._made is None:
            self._made = self._stream.pull()
        return self._made

    async def aclose(self) -> None:
        if self._made is not None:
            await self._made.aclose()


class RelayResponse(StreamingResponse):
    """A stream of `RelayedStream`'s. Sent by the server it is pushed (module doc), unless its
    `body_iterator` was replaced by a wrapper; without the anyio task group either: one task
    (`_listen`) waits for the client's disconnect and calls `on_disconnect` (the relay then
    stops reading upstream)."""

    def __init__(
        self, stream: RelayedStream, *args: Any, on_disconnect: Callable[[], None], **kwargs: Any
    ) -> None:
        self._stream = stream
        self._own = _Pulled(stream)
        super().__init__(self._own, *args, **kwargs)
        self.on_disconnect = on_disconnect
        self._gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._gone = False
        listener = asyncio.create_task(self._listen(receive))
        start: Message = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        try:
            if self.body_iterator is self._own and self._own.untouched:
                await self._stream.push(send, start)
            else:
                await send(start)
                async for chunk in self.body_iterator:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            listener.cancel()  # done already when the response ended with `[DONE]`
        if not self._gone and not self._stream.client_done:  # one that left gets no end
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _listen(self, receive: Receive) -> None:
        """Until the client disconnects (then `on_disconnect`) or the response is complete:
        servers say `http.disconnect` from then on too (ASGI), and that is no client gone,
        the upstream's end is still read."""
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # the stream it listens for runs (and settles) regardless
            log.debug("receive() failed; no longer listening", exc_info=True)
            return
        if not self._stream.client_done:
            self._gone = True
            self.on_disconnect()


class StreamRelay:
    def __init__(
        self, health: HealthMonitor, metrics: GatewayMetrics, idle_read_s: float, total_s: float
    ) -> None:
        self._settings = RelaySettings(health, metrics, idle_read_s, total_s)

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
            RelayedStream(self._settings, call, route, replica, resp, first, deadline),
            headers=headers,
            media_type=content_type,
            on_disconnect=lambda: resp.fail_lease(lease, ClientGone()),
        )
