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
`fail`, `settle`), both behind one reply body (`RelayBody`, a `core.reply.Stream`):
- pushed by the edge (`RelayBody.push`, the usual case): `RelayedStream.push`, a plain loop in
  the server's task for the request: await the upstream connection for what came
  (`Connection.take`/`wait`: everything since the last wake-up, joined), write its whole events
  with one `await write(...)`, again. A chat stream's `[DONE]` ends the client's response
  (`more=False` with it: one write less); the upstream's end is still read, so the connection is
  reused. The edge's task awaiting `receive()` hears the client leave and calls `stop` (uvicorn's
  `send` to a client that left returns without a word, so the relay cannot tell by sending).
- read as an iterator (in-process readers: ensemble members, batch rows, wrappers that look at
  the bytes): `RelayedStream.pull`, an async generator with the same steps.

Why no async generator when pushed: at 256 streams of 20 tokens/s each chunk arrives alone, and
a generator between the relay and the write was one more resumed frame chain per chunk
(bench/results/issue22/README.md, bench/results/issue30/README.md have the figures).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from ..balancing.replica import Replica
from ..cluster.routing import ModelRoute
from ..core.call import Call
from ..core.reply import Reply, Stream, Write
from ..metrics import GatewayMetrics
from .health import HealthMonitor
from .http1.protocol import Connection
from .relayed_stream import ClientGone, RelayedStream, RelaySettings


class RelayBody(Stream):
    """A relayed stream as a reply's body: pushed by the edge, or iterated (its generator,
    `RelayedStream.pull`, is made the first time something iterates it: a pushed stream never
    does, and making and closing a generator per stream costs its creation, the loop's
    first-iteration hook and a close, ~3% of the Python a 1-token stream runs, cProfile)."""

    __slots__ = ("_lease", "_made", "_resp", "_stream")

    def __init__(self, stream: RelayedStream, resp: Connection) -> None:
        self._stream = stream
        self._resp = resp
        self._lease = resp.leases  # the lease this stream holds (the connection is reused)
        self._made: AsyncGenerator[bytes, None] | None = None

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        if self._made is None:
            self._made = self._stream.pull()
        return self._made

    async def push(self, write: Write) -> None:
        await self._stream.push(write)

    def stop(self) -> None:
        """The client left: the upstream read fails at once (and the stream settles)."""
        self._resp.fail_lease(self._lease, ClientGone())

    async def aclose(self) -> None:
        if self._made is not None:
            await self._made.aclose()
        self._stream.settle()  # nothing when it has settled: a stream never run settles here


class StreamRelay:
    def __init__(
        self, health: HealthMonitor, metrics: GatewayMetrics, idle_read_s: float, total_s: float
    ) -> None:
        self._settings = RelaySettings(health, metrics, idle_read_s, total_s)

    def reply(
        self,
        call: Call,
        route: ModelRoute,
        replica: Replica,
        resp: Connection,
        first: bytes,
        headers: dict[str, str],
        content_type: str,
        deadline: float,
    ) -> Reply:
        """The client's streamed reply; from here on the stream settles what it holds.
        `deadline`: loop time by which the upstream request must be over (its `total_s`)."""
        stream = RelayedStream(self._settings, call, route, replica, resp, first, deadline)
        return Reply(RelayBody(stream, resp), 200, headers, content_type)
