"""The gateway's one reply (`core/reply.py`) and its one ASGI writer (`edge/outgoing.py`): a reply
closes exactly once however it is read (whole, part by part, stopped early, the client gone,
a failed send), a stream never started still releases what it holds, and a pushed generator
stream is stopped where it waits when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from starlette.types import Message

from orchestra.gateway.core.reply import IterStream, Reply, Stream
from orchestra.gateway.edge.outgoing import Outgoing


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


class Tracked:
    """An async generator of `n` parts (then, with `hang`, waiting forever) that records
    whether its `finally` ran."""

    def __init__(self, n: int, hang: bool = False) -> None:
        self.n = n
        self.hang = hang
        self.finished = False
        self.waiting = asyncio.Event()  # set once it hangs

    async def parts(self) -> AsyncIterator[bytes]:
        try:
            for i in range(self.n):
                yield b"part%d;" % i
            if self.hang:
                self.waiting.set()
                await asyncio.Event().wait()
        finally:
            self.finished = True


def _reply(body: bytes | Stream) -> tuple[Reply, list[str]]:
    closed: list[str] = []
    reply = Reply(body, 200, {"x-a": "1"}, "text/event-stream")
    reply.on_close(lambda: closed.append("closed"))
    return reply, closed


def test_a_whole_body_is_read_and_the_reply_closes_once() -> None:
    async def go() -> None:
        reply, closed = _reply(b"whole")
        assert await reply.read() == b"whole"
        await reply.aclose()
        assert closed == ["closed"]
        assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"

    _run(go)


def test_a_stream_read_part_by_part_closes_once_when_it_ends() -> None:
    async def go() -> None:
        source = Tracked(3)
        reply, closed = _reply(IterStream(source.parts()))
        assert [part async for part in reply.chunks()] == [b"part0;", b"part1;", b"part2;"]
        await reply.aclose()
        assert closed == ["closed"] and source.finished

    _run(go)


def test_a_reader_that_stops_early_closes_the_stream_it_left() -> None:
    async def go() -> None:
        source = Tracked(100)
        reply, closed = _reply(IterStream(source.parts()))
        assert isinstance(reply.body, Stream)
        async for _ in reply.body:
            break
        await reply.aclose()
        await reply.aclose()
        assert closed == ["closed"] and source.finished

    _run(go)


def test_a_read_cancelled_midway_closes_the_reply() -> None:
    async def go() -> None:
        source = Tracked(1, hang=True)
        reply, closed = _reply(IterStream(source.parts()))
        task = asyncio.ensure_future(reply.read())
        await asyncio.wait_for(source.waiting.wait(), 10)  # the read waits inside the source
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert closed == ["closed"] and source.finished

    _run(go)


def test_a_stream_never_started_still_runs_the_closers() -> None:
    async def go() -> None:
        reply, closed = _reply(IterStream(Tracked(2).parts()))
        await reply.aclose()
        assert closed == ["closed"]

    _run(go)


def test_with_body_hands_the_closers_over() -> None:
    async def go() -> None:
        reply, closed = _reply(b'{"error": {}}')
        shaped = reply.with_body(b"other")
        assert await shaped.read() == b"other"
        assert closed == ["closed"]

    _run(go)


def _client(
    fail: bool = False,
) -> tuple[list[Message], Callable[[Message], Awaitable[None]], asyncio.Event]:
    sent: list[Message] = []
    gone = asyncio.Event()

    async def send(message: Message) -> None:
        if fail:
            raise OSError("the client's socket broke")
        sent.append(message)
        if len([m for m in sent if m.get("body")]) == 2:
            gone.set()

    return sent, send, gone


def test_the_edge_writes_a_stream_and_ends_it() -> None:
    async def go() -> None:
        source = Tracked(3)
        reply, closed = _reply(IterStream(source.parts()))
        sent, send, _ = _client()
        out = Outgoing(send, (b"x-request-id", b"r1"))

        async def never() -> Message:
            await asyncio.Event().wait()
            raise AssertionError

        await out.answer(reply, never)
        assert sent[0]["type"] == "http.response.start"
        assert (b"x-request-id", b"r1") in sent[0]["headers"]
        assert b"".join(m["body"] for m in sent[1:]) == b"part0;part1;part2;"
        assert sent[-1]["more_body"] is False
        assert out.ended and not out.gone and closed == ["closed"]

    _run(go)


def test_a_client_that_leaves_stops_a_pushed_generator_where_it_waits() -> None:
    async def go() -> None:
        source = Tracked(2, hang=True)
        reply, closed = _reply(IterStream(source.parts()))
        sent, send, gone = _client()

        async def receive() -> Message:
            await gone.wait()
            return {"type": "http.disconnect"}

        out = Outgoing(send, None)
        await out.answer(reply, receive)
        assert all(m.get("more_body", True) for m in sent[1:])  # no end was written
        assert out.gone and not out.ended
        assert closed == ["closed"] and source.finished

    _run(go)


def test_a_failed_send_propagates_and_the_reply_closes() -> None:
    async def go() -> None:
        source = Tracked(2)
        reply, closed = _reply(IterStream(source.parts()))
        _, send, _ = _client(fail=True)

        async def never() -> Message:
            await asyncio.Event().wait()
            raise AssertionError

        with pytest.raises(OSError):
            await Outgoing(send, None).answer(reply, never)
        assert closed == ["closed"]

    _run(go)
