"""Playing a gateway Response in-process, to read what it would send a client.

The one reader of a response in-process: ensembles (their members), loading comments (the
response after the load) and batch rows all go through the pipeline, which answers with
Starlette responses (plain, streaming, or wrapped to release an admission slot when sent).
`Drain` runs one as ASGI with a send that queues its messages, so its body can be read chunk by
chunk, and `abort()` ends it the way a client leaving would: the upstream connection is closed
and every count is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive

log = logging.getLogger(__name__)

_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},  # no disconnect-listening task
    "http_version": "1.1",
    "method": "POST",
    "path": "/",
    "headers": [],
}
_QUEUE_CHUNKS = 64  # back-pressure: a member streams no further ahead than this


class Drain:
    """`receive`: the client's own, when the response is relayed to a client (its disconnect
    then reaches the response); else the response sees a disconnect only on `abort()`."""

    def __init__(self, response: Response, receive: Receive | None = None) -> None:
        self.response = response
        self._client_receive = receive
        self.status = response.status_code
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(_QUEUE_CHUNKS)
        self._gone = asyncio.Event()
        self._started = asyncio.Event()
        self._finished = False
        self._task = asyncio.ensure_future(self._play())

    async def _play(self) -> None:
        self._started.set()
        try:
            await self.response(dict(_SCOPE), self._receive, self._queue.put)
        except Exception:  # a response that failed to play: its reader sees the end
            log.exception("in-process response failed")
        await self._queue.put(None)  # (not reached when cancelled: abort() reads nothing more)

    async def _receive(self) -> Message:
        if self._client_receive is not None:
            return await self._client_receive()
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self._finished:
            message = await self._queue.get()
            if message is None:
                self._finished = True
                return
            if message["type"] != "http.response.body":
                continue
            if message.get("body"):
                yield bytes(message["body"])
            if not message.get("more_body", False):
                self._finished = True

    async def body(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def abort(self) -> None:
        """Stop playing (no-op once finished). A stream's generator must have started for its
        clean-up (`finally`) to run, so the task gets its first step before it is cancelled."""
        if self._task.done():
            return
        if not self._started.is_set():
            await self._started.wait()
        self._gone.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        iterator = getattr(self.response, "body_iterator", None)
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
