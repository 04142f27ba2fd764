"""The gateway's one reply type: what the pipeline answers, whoever reads it.

A `Reply` is plain data: a status, headers, a body (bytes, or a `Stream` of bytes) and what to
run when it closes (release an admission slot, settle a relayed stream's connection). Nothing
in it runs the request: the work before the first byte is done when the pipeline returns it,
and a stream's work runs only as its reader pulls or the edge pushes it. Only the edge
(`edge/edge.py`) turns a reply into ASGI messages; batch rows and ensemble members read it
directly (`read`, `chunks`).

Invariant: a reply is closed exactly once (`aclose`, idempotent), by whoever read it: the
edge after the last byte or when the client left, an in-process reader when it has what it
wants (also when it stops early). Closing closes the body's stream (which settles what it
holds, started or not) and then runs the closers in the order they were added.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)

JSON = "application/json"
SSE = "text/event-stream"

# The edge's sink for a pushed stream: one body part, and whether more follows (False: the
# response ends with this part).
Write = Callable[[bytes, bool], Awaitable[None]]


class Stream:
    """A streamed body. In-process readers iterate it; the edge pushes it (`push`: every part
    written from the calling task, the last with `more=False`) and calls `stop` when the client
    leaves. `aclose` releases what it holds whether it ran or not, once."""

    __slots__ = ()

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def push(self, write: Write) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """The reader left: stop reading the source as soon as possible (`push` returns)."""

    async def aclose(self) -> None:
        raise NotImplementedError


class IterStream(Stream):
    """A stream over an async iterator of bytes (an async generator, usually). Pushed, the
    iterator runs in its own task so that `stop` can cancel it wherever it waits (a generator
    cannot be interrupted from outside otherwise); the parts are written from that task."""

    __slots__ = ("_chunks", "_task")

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._task: asyncio.Task[None] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def push(self, write: Write) -> None:
        task = asyncio.ensure_future(self._pump(write))
        self._task = task
        try:
            await asyncio.wait({task})
        finally:
            if not task.done():  # our own caller was cancelled: so is the stream
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled():  # cancelled: `stop`, the reader is gone
            task.result()  # a failed write propagates to the edge

    async def _pump(self, write: Write) -> None:
        async for chunk in self._chunks:
            if chunk:
                await write(chunk, True)
        await write(b"", False)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class Reply:
    """Status, headers (lower-case names), a body of bytes or a `Stream`, closers."""

    __slots__ = ("_closed", "_closers", "body", "headers", "status")

    def __init__(
        self,
        body: bytes | Stream = b"",
        status: int = 200,
        headers: dict[str, str] | None = None,
        media_type: str | None = None,
        closers: list[Callable[[], object]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = {} if headers is None else headers
        if media_type is not None:
            if media_type.startswith("text/") and "charset=" not in media_type:
                media_type += "; charset=utf-8"  # as Starlette's responses always said
            self.headers["content-type"] = media_type
        self._closers: list[Callable[[], object]] = [] if closers is None else closers
        self._closed = False

    @property
    def streamed(self) -> bool:
        return isinstance(self.body, Stream)

    def with_body(self, body: bytes | Stream) -> Reply:
        """The same reply (status, headers, closers) with another body, which takes over what
        the old one held: the new reply is the one to close, the old one is dropped."""
        return Reply(body, self.status, self.headers, closers=self._closers)

    def on_close(self, closer: Callable[[], object]) -> None:
        """Run `closer` (a plain function) when the reply closes."""
        self._closers.append(closer)

    async def aclose(self) -> None:
        """Close the body's stream, then run the closers; once (later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            if isinstance(self.body, Stream):
                await self.body.aclose()
        finally:
            for closer in self._closers:
                try:
                    closer()
                except Exception:  # one failing closer must not keep the others from running
                    log.exception("a reply's closer failed")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body part by part; the reply is closed when this ends. A reader that may stop
        early closes the reply itself (`aclose`): a generator left unfinished runs its
        `finally` only when it is closed or collected."""
        try:
            body = self.body
            if isinstance(body, Stream):
                async for chunk in body:
                    yield chunk
            elif body:
                yield body
        finally:
            await self.aclose()

    async def read(self) -> bytes:
        """The whole body; the reply is closed however the read ends (a cancel included)."""
        try:
            body = self.body
            if isinstance(body, Stream):
                return b"".join([chunk async for chunk in body])
            return body
        finally:
            await self.aclose()
