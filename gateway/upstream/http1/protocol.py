"""One pooled HTTP/1.1 connection to an upstream: an asyncio protocol whose responses are
parsed by httptools (a C parser; we write only the glue).

Invariants:
- One request at a time per connection; the connection is its own response object (`status`,
  `headers`, the body reads). `Pool` leases it for one request and gets it back exactly once,
  through `release` (reused only after a clean, complete, keep-alive response whose body was
  read to the end) or `close` (anything else: closing the socket is how a request the client
  gave up on is cancelled upstream).
- The body reaches the reader without a stream object in between: `on_body` appends the
  payload bytes (chunked framing already removed by the parser) to a list and wakes the one
  waiter. `take` hands over everything that came, untouched and undelayed.
- Flow control: once more than `high_water` bytes wait unread, the socket stops being read
  (`pause_reading`) until the reader takes them, so a slow client cannot make the gateway
  buffer an upstream's output without bound.
- A failure (the connection lost before the response ended, a parse error, or one set from
  outside: the client gone, the stream's idle timer) is stored once and raised by every later
  read; the connection is then unusable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import httptools


class UpstreamClosed(ConnectionResetError):
    """The upstream closed the connection (or sent what cannot be parsed) before the response
    ended: a crash, or a keep-alive socket it closed while we held it idle."""


class _Unasked(Exception):
    """Raised from the parser's callback to stop it at a response no request asked for."""


_LOST = "upstream closed the connection before the response ended"


class Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_buffered",
        "_done",
        "_drained",
        "_error",
        "_head",
        "_high_water",
        "_home",
        "_keep_alive",
        "_leased",
        "_loop",
        "_parser",
        "_paused",
        "_to_eof",
        "_transport",
        "_waiter",
        "closed",
        "headers",
        "idle_since",
        "leases",
        "status",
    )

    def __init__(self, high_water: int, home: Callable[[Connection, bool], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._high_water = high_water
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None  # set while writes wait (pause_writing)
        self._done = False  # the current response has ended cleanly
        self._to_eof = False  # its body runs until the upstream closes (no length, not chunked)
        self._keep_alive = False  # the response allows another request on the connection
        self._error: BaseException | None = None
        self.closed = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.idle_since = 0.0  # loop time it went back to the pool
        # The pool's: called once per lease, with (connection, reusable), at release or close.
        self._home = home
        self._leased = False
        self.leases = 0  # requests sent so far: names one lease (see `fail_lease`)

    # ---- the request -----------------------------------------------------------------------
    def send(self, request: bytes) -> asyncio.Future[None]:
        """Write one request (head and body in one buffer); the future resolves at the head.
        From here until `release` or `close` the connection is leased."""
        self._leased = True
        self.leases += 1
        self._body = []
        self._buffered = 0
        self._done = self._to_eof = self._keep_alive = False
        self.status = 0
        self.headers = {}
        self._head = self._loop.create_future()
        assert self._transport is not None
        self._transport.write(request)
        return self._head

    async def write(self, data: bytes) -> None:
        """Part of a request body (an upload), waiting while the socket's buffer is full."""
        if self._error is not None:
            raise self._error
        assert self._transport is not None
        self._transport.write(data)
        if self._drained is not None:
            await self._drained

    # ---- the body --------------------------------------------------------------------------
    def take(self) -> bytes | None:
        """What came since the last take (b"": the body ended), or None: nothing yet (then
        await `wait()`). Raises the connection's failure, if any."""
        if self._body:
            body = self._body
            data = body[0] if len(body) == 1 else b"".join(body)
            body.clear()
            self._buffered = 0
            if self._paused:
                self._paused = False
                assert self._transport is not None
                self._transport.resume_reading()
            return data
        if self._error is not None:
            raise self._error
        return b"" if self._done else None

    def wait(self) -> asyncio.Future[None]:
        """Resolves when there is something to `take` (data, the end, or a failure)."""
        waiter = self._waiter = self._loop.create_future()
        return waiter

    async def read(self) -> bytes:
        """The next data (b"": the body ended)."""
        data = self.take()
        while data is None:
            await self.wait()
            data = self.take()
        return data

    async def read_all(self) -> bytes:
        """The rest of the body."""
        parts = []
        while True:
            data = self.take()
            if data is None:
                await self.wait()
            elif data:
                parts.append(data)
            else:
                return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet taken."""
        return self._buffered

    def set_exception(self, exc: BaseException) -> None:
        """Fail the reads from outside (the client gone, the idle timer); the first one wins."""
        if self._error is None:
            self._error = exc
        self._wake()

    def fail_lease(self, lease: int, exc: BaseException) -> None:
        """`set_exception`, only while lease number `lease` holds the connection: a late
        signal (a client that left after its stream ended) never reaches the next request."""
        if self._leased and lease == self.leases:
            self.set_exception(exc)

    # ---- settling --------------------------------------------------------------------------
    def release(self) -> None:
        """Back to the pool if the response ended cleanly and was read to the end, else close."""
        reusable = (
            self._done
            and not self._body
            and self._error is None
            and not self.closed
            and self._keep_alive
        )
        if not reusable:
            self.close()
            return
        self._settle(True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()
        self._settle(False)

    def _settle(self, reusable: bool) -> None:
        if self._leased:
            self._leased = False
            self._home(self, reusable)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        head = self._head
        if head is not None and not head.done() and self._error is not None:
            head.set_exception(self._error)

    # ---- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._head is None:  # bytes on an idle connection: it cannot be trusted any more
            self.closed = True
            assert self._transport is not None
            self._transport.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A response we did not ask for (after a complete one) closes the connection and
            # leaves the complete one as it is; anything else unparsable fails the request.
            self.closed = True
            if not self._done:
                self.set_exception(UpstreamClosed(f"upstream sent a malformed response: {exc}"))
            assert self._transport is not None
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._to_eof and not self._done:  # a body without a length ends with the socket
            self._done = True
            self._wake()
        elif not self._done and self._head is not None:
            self.set_exception(UpstreamClosed(_LOST if exc is None else f"{_LOST}: {exc!r}"))
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_exception(self._error or UpstreamClosed(_LOST))

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # ---- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._done:  # a second response to one request: stop parsing (data_received)
            raise _Unasked

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()
        headers = self.headers
        self._to_eof = "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > self._high_water and not self._paused:
            self._paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_message_complete(self) -> None:
        self._done = True
        self._head = None  # a response is over: later bytes, before the next request, are not
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
