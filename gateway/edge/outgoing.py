"""The client's side of one request: the one place a gateway reply (`core.reply.Reply`) becomes
ASGI messages.

`Outgoing` sends with `x-request-id` added and remembers what went out (the status, whether the
last byte did) for the count. A whole reply is exactly two messages. A stream is pushed from the
server's task (`Stream.push`, written through `Outgoing.write`: a plain function, not a
coroutine around the server's send, since a relayed stream writes every chunk through it),
while a second task awaits `receive()` for the client's disconnect (uvicorn's `send` to a
client that left returns without a word) and then stops the stream. The reply is closed once,
however the answer ends (sent, the client gone, a failed send, the server's cancel).

FastAPI endpoints that answer with a pipeline reply (`stored.py`) return it wrapped in
`AsResponse`, which plays it through an `Outgoing` as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..core.reply import Reply, Stream

log = logging.getLogger(__name__)

_NO_LENGTH = frozenset({204, 304})  # no body, so no content-length (RFC 9110 §8.6)


class Outgoing:
    """Not a reply type (`core.reply.Reply` is): the client's end of the wire."""

    __slots__ = ("_header", "_send", "ended", "error", "gone", "head_at", "reply", "status")

    def __init__(self, send: Send, header: tuple[bytes, bytes] | None) -> None:
        self._send = send
        self._header = header  # added to the head (x-request-id); None: the caller adds it
        self.status = 0
        self.ended = False  # the last byte went out
        self.gone = False  # the client left before it did
        # For the audit line (edge/audited.py): the reply answered, an error answer's body,
        # when a stream's head went out.
        self.reply: Reply | None = None
        self.error: bytes | None = None
        self.head_at = 0.0

    async def answer(self, reply: Reply, receive: Receive) -> None:
        """Write `reply` to the client and close it."""
        try:
            headers = [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in reply.headers.items()
            ]
            if self._header is not None:
                headers.append(self._header)
            body = reply.body
            self.status = reply.status
            self.reply = reply
            if isinstance(body, Stream):
                self.head_at = time.perf_counter()
                await self._send(
                    {"type": "http.response.start", "status": self.status, "headers": headers}
                )
                await self._push(body, receive)
                return
            if self.status >= 400:
                self.error = body
            if self.status >= 200 and self.status not in _NO_LENGTH:
                headers.append((b"content-length", b"%d" % len(body)))
            await self._send(
                {"type": "http.response.start", "status": self.status, "headers": headers}
            )
            await self._send({"type": "http.response.body", "body": body})
            self.ended = True
        finally:
            await reply.aclose()

    async def _push(self, stream: Stream, receive: Receive) -> None:
        listener = asyncio.create_task(self._listen(stream, receive))
        try:
            await stream.push(self.write)
        finally:
            listener.cancel()  # done already when the client left or the answer ended

    def write(self, data: bytes, more: bool) -> Awaitable[None]:
        """A stream's sink (`core.reply.Write`): one body message, the server's own send."""
        if not more and not self.gone:
            self.ended = True
        return self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def _listen(self, stream: Stream, receive: Receive) -> None:
        """Until the client disconnects (then the stream stops) or the answer is complete:
        servers say `http.disconnect` from then on too (ASGI), and that is no client gone."""
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # the stream it listens for runs (and closes) regardless
            log.debug("receive() failed; no longer listening", exc_info=True)
            return
        if not self.ended:
            self.gone = True
            stream.stop()

    def send(self, message: Message) -> Awaitable[None]:
        """An ASGI send for FastAPI's answers: the server's own send, with `x-request-id`
        added to the head and what went out remembered."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self._header is not None:
                message["headers"] = [*message.get("headers", ()), self._header]
        else:
            if self.status >= 400 and self.error is None:
                self.error = message.get("body", b"")
            if not message.get("more_body", False):
                self.ended = True
        return self._send(message)


class AsResponse(Response):
    """A pipeline reply as a FastAPI endpoint's answer (the edge's `Outgoing.send` around it
    adds the request id and counts)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.status_code = reply.status
        self.background = None
        self.raw_headers = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Outgoing(send, None).answer(self.reply, receive)
