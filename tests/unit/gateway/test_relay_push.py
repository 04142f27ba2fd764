"""The stream relay's two ways (`gateway/upstream/stream_relay.py`) against a raw upstream that
writes SSE events as the test says: pushed (written by the edge's `Outgoing`, in the server's
task with plain awaits), bytes
arrive whole and in order also when the client's send has to wait, what came meanwhile goes out
joined in whole events, a send that fails fails the stream, a malformed event ends it with one
error event, `[DONE]` ends the response and the connection is reused, a client that leaves stops
the upstream read at once and the stream settles once; pulled as an iterator gives the same
bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from starlette.types import Message, Receive, Send

from orchestra.gateway.balancing.replica import Replica
from orchestra.gateway.core.call import new_call
from orchestra.gateway.core.reply import IterStream, Reply, Stream
from orchestra.gateway.edge.outgoing import Outgoing
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.upstream.http1.pool import Pool
from orchestra.gateway.upstream.http1.protocol import Connection
from orchestra.gateway.upstream.stream_relay import StreamRelay

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _event(i: int) -> bytes:
    return b'data: {"i": %d}\n\n' % i


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _upstream(write: Writer) -> AsyncIterator[str]:
    """Answers one request with HEAD and whatever `write` sends."""
    handlers: list[asyncio.Task[Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(cast(asyncio.Task[Any], asyncio.current_task()))
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)  # the body: b"{}"
        writer.write(HEAD)
        try:
            await write(writer)
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def _events(writer: asyncio.StreamWriter, n: int, done: bool = True) -> None:
    """`n` events, then `[DONE]` and the body's end (with `done`)."""
    for i in range(n):
        writer.write(_chunk(_event(i)))
        if i % 50 == 0:
            await writer.drain()
            await asyncio.sleep(0)  # let the gateway read: many small reads, as in production
    if done:
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


class Health:
    """Records what the relay marks down (the only health call a stream makes)."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark_down(self, route: object, replica: Replica, reason: str) -> None:
        self.reasons.append(reason)


async def _relayed(
    url: str, pool: Pool, health: Health | None = None
) -> tuple[Reply, Replica, GatewayMetrics, Connection]:
    resp = await pool.request(url, "POST", "/v1/chat/completions", {}, b"{}")
    first = await resp.read()
    metrics = GatewayMetrics()
    metrics.model("m").inflight.inc()
    replica = Replica(url, outstanding=1)
    call = new_call("/v1/chat/completions", b"{}", {}, "m", request_id="r", stream=True)
    relay = StreamRelay(cast(Any, health or Health()), metrics, 5.0, 60.0)
    loop = asyncio.get_running_loop()
    reply = relay.reply(
        call, cast(Any, None), replica, resp, first, {}, "text/event-stream", loop.time() + 60
    )
    return reply, replica, metrics, resp


async def _play(reply: Reply, receive: Receive, send: Send) -> None:
    """`reply` written to a client as the edge writes it."""
    await Outgoing(send, None).answer(reply, receive)


class Client:
    """An ASGI send whose every `every`-th body message waits (a client whose buffer is full)."""

    def __init__(self, every: int = 0, fail_at: int = 0) -> None:
        self.every = every
        self.fail_at = fail_at
        self.bodies: list[bytes] = []
        self.waited = 0
        self.tasks: set[asyncio.Task[Any] | None] = set()  # the tasks that sent
        self.ended = False

    async def send(self, message: Message) -> None:
        if message["type"] != "http.response.body":
            return
        self.tasks.add(asyncio.current_task())
        if self.fail_at and len(self.bodies) + 1 == self.fail_at:
            raise ConnectionResetError("client socket broke")
        if self.every and len(self.bodies) % self.every == self.every - 1:
            self.waited += 1
            drained = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.001, drained.set_result, None)
            await drained
        self.bodies.append(message["body"])
        self.ended = self.ended or not message.get("more_body", False)


async def _receive() -> Message:
    await asyncio.Event().wait()  # the client never leaves
    raise AssertionError


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


EXPECTED = b"".join(_event(i) for i in range(400)) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("every", [0, 7])
def test_pushed_stream_arrives_whole_and_in_order(every: int) -> None:
    async def go() -> None:
        async with _upstream(lambda w: _events(w, 400)) as url:
            pool = Pool(4, 30.0, 2.0)
            response, replica, metrics, _ = await _relayed(url, pool)
            client = Client(every)
            await _play(response, _receive, client.send)
            assert b"".join(client.bodies) == EXPECTED
            assert all(body.endswith(b"\n\n") for body in client.bodies)  # whole events
            assert client.ended and (client.waited > 0) == (every > 0)
            assert client.tasks == {asyncio.current_task()}  # every send in the caller's task
            assert replica.outstanding == 0
            assert metrics.model("m").inflight._value.get() == 0
            pool.close()

    _run(go)


def test_pulled_stream_gives_the_same_bytes() -> None:
    async def go() -> None:
        async with _upstream(lambda w: _events(w, 400)) as url:
            pool = Pool(4, 30.0, 2.0)
            response, replica, _, _ = await _relayed(url, pool)
            assert isinstance(response.body, Stream)
            got = [chunk async for chunk in response.body]
            await response.aclose()
            assert b"".join(got) == EXPECTED
            assert replica.outstanding == 0
            pool.close()

    _run(go)


def test_a_send_that_fails_fails_the_stream_and_settles_it() -> None:
    """The client's side broke: the error reaches the server as it was, the stream settles
    (the upstream connection closed, not reused), and the replica is not blamed."""

    async def go() -> None:
        async with _upstream(lambda w: _events(w, 400)) as url:
            pool = Pool(4, 30.0, 2.0)
            health = Health()
            response, replica, metrics, resp = await _relayed(url, pool, health)
            client = Client(fail_at=2)
            with pytest.raises(ConnectionResetError):
                await _play(response, _receive, client.send)
            assert len(client.bodies) == 1 and client.bodies[0].startswith(_event(0))
            assert resp.closed and health.reasons == []
            assert replica.outstanding == 0
            assert metrics.model("m").inflight._value.get() == 0
            pool.close()

    _run(go)


def test_a_malformed_event_ends_the_stream_with_one_error_event() -> None:
    async def bad(writer: asyncio.StreamWriter) -> None:
        await _events(writer, 60, done=False)
        writer.write(_chunk(b"data: {not json\n\n"))
        await _events(writer, 5)

    async def go() -> None:
        async with _upstream(bad) as url:
            pool = Pool(4, 30.0, 2.0)
            health = Health()
            response, replica, _, _ = await _relayed(url, pool, health)
            client = Client()
            await _play(response, _receive, client.send)
            out = b"".join(client.bodies)
            assert out.startswith(b"".join(_event(i) for i in range(60)))
            assert out.count(b'"error"') == 1 and b"{not json" not in out
            assert health.reasons == ["malformed SSE"]
            assert replica.outstanding == 0
            pool.close()

    _run(go)


async def _served(response: Reply) -> list[Message]:
    """The messages `response` sends to a server whose receive says `http.disconnect` once the
    response is complete (as uvicorn's does)."""
    messages: list[Message] = []
    ended = asyncio.Event()

    async def send(message: Message) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            ended.set()

    async def receive() -> Message:
        await ended.wait()
        return {"type": "http.disconnect"}

    await _play(response, receive, send)
    return messages


def test_done_ends_the_response_and_the_connection_is_reused() -> None:
    """`[DONE]` goes out as the last body message (no empty one after it); a server's receive
    says `http.disconnect` once the response is complete, as uvicorn's does, and that is not a
    client gone: the relay still reads the upstream's end and the connection is reused."""
    handlers: list[asyncio.Task[Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(cast(asyncio.Task[Any], asyncio.current_task()))
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
                writer.write(HEAD)
                await _events(writer, 30, done=False)
                writer.write(_chunk(b"data: [DONE]\n\n"))
                await writer.drain()
                await asyncio.sleep(0.05)  # the client's response is over before the body's end
                writer.write(b"0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def go() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        pool = Pool(4, 30.0, 2.0)
        for _ in range(2):
            response, replica, _, _ = await _relayed(url, pool)
            messages = await _served(response)
            assert b"".join(m["body"] for m in messages[1:]) == b"".join(
                _event(i) for i in range(30)
            ) + (b"data: [DONE]\n\n")
            last = messages[-1]  # the events may come in one read with it
            assert last["body"].endswith(b"data: [DONE]\n\n") and not last["more_body"]
            assert replica.outstanding == 0
        assert len(handlers) == 1  # the second stream reused the first one's connection
        pool.close()
        await asyncio.gather(*handlers)  # the pool's close ends the handler's read
        server.close()

    _run(go)


def test_what_came_while_the_client_was_slow_goes_out_in_one_message() -> None:
    """The first send waits until the upstream has sent 20 more events, each its own chunk:
    the next body message holds all of them, in order, whole."""
    wrote = asyncio.Event()

    async def burst(writer: asyncio.StreamWriter) -> None:
        writer.write(_chunk(_event(0)))
        await writer.drain()
        await wrote.wait()  # set by the test once the client's first send is waiting
        for i in range(1, 21):
            writer.write(_chunk(_event(i)))
            await writer.drain()
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async def go() -> None:
        async with _upstream(burst) as url:
            pool = Pool(4, 30.0, 2.0)
            response, replica, _, resp = await _relayed(url, pool)
            bodies: list[bytes] = []
            burst_size = len(b"".join(_event(i) for i in range(1, 21)))

            async def send(message: Message) -> None:
                if message["type"] != "http.response.body":
                    return
                if not bodies:  # the client's buffer is full until the burst is in
                    wrote.set()
                    for _ in range(2000):  # polled, 10 s at most
                        if resp.buffered >= burst_size:
                            break
                        await asyncio.sleep(0.005)
                bodies.append(message["body"])

            await _play(response, _receive, send)
            assert bodies[0] == _event(0)
            assert bodies[1].startswith(b"".join(_event(i) for i in range(1, 21)))
            assert b"".join(bodies) == b"".join(_event(i) for i in range(21)) + (
                b"data: [DONE]\n\n"
            )
            assert replica.outstanding == 0
            pool.close()

    _run(go)


def test_a_client_that_leaves_stops_the_upstream_read_and_the_stream_settles_once() -> None:
    """The upstream never ends; the client disconnects after 5 events. The relay stops at
    once: no end message, the upstream connection closed (not reused), `outstanding` and the
    in-flight gauge back to 0 exactly once."""
    closed = asyncio.Event()

    async def endless(writer: asyncio.StreamWriter) -> None:
        try:
            for i in range(100_000):
                writer.write(_chunk(_event(i)))
                await writer.drain()
                await asyncio.sleep(0.002)
        except ConnectionError:
            pass
        finally:
            closed.set()

    async def go() -> None:
        async with _upstream(endless) as url:
            pool = Pool(4, 30.0, 2.0)
            response, replica, metrics, resp = await _relayed(url, pool)
            messages: list[Message] = []
            gone = asyncio.Event()

            async def send(message: Message) -> None:
                messages.append(message)
                if len(messages) == 6:  # the head and 5 bodies
                    gone.set()

            async def receive() -> Message:
                await gone.wait()
                return {"type": "http.disconnect"}

            await _play(response, receive, send)
            assert all(m.get("more_body", True) for m in messages[1:])  # no end was sent
            assert resp.closed and pool.opened == 1
            await asyncio.wait_for(closed.wait(), 10)  # the upstream saw its socket close
            assert replica.outstanding == 0
            assert metrics.model("m").inflight._value.get() == 0
            pool.close()

    _run(go)


def test_a_client_that_leaves_a_pulled_stream_stops_it_too() -> None:
    """A wrapper iterates the body (the pulled way): the disconnect still stops it."""

    async def endless(writer: asyncio.StreamWriter) -> None:
        for i in range(100_000):
            writer.write(_chunk(_event(i)))
            await writer.drain()
            await asyncio.sleep(0.002)

    async def go() -> None:
        async with _upstream(endless) as url:
            pool = Pool(4, 30.0, 2.0)
            response, replica, _, resp = await _relayed(url, pool)
            inner = response.body
            assert isinstance(inner, Stream)

            async def wrapped() -> AsyncIterator[bytes]:
                async for chunk in inner:
                    yield chunk

            response = response.with_body(IterStream(wrapped()))
            bodies: list[bytes] = []
            gone = asyncio.Event()

            async def send(message: Message) -> None:
                if message["type"] == "http.response.body":
                    bodies.append(message["body"])
                    if len(bodies) == 5:
                        gone.set()

            async def receive() -> Message:
                await gone.wait()
                return {"type": "http.disconnect"}

            await _play(response, receive, send)
            assert resp.closed and replica.outstanding == 0
            pool.close()

    _run(go)


def test_a_receive_that_fails_only_ends_the_listening() -> None:
    async def go() -> None:
        async with _upstream(lambda w: _events(w, 40)) as url:
            pool = Pool(4, 30.0, 2.0)
            response, replica, _, _ = await _relayed(url, pool)

            async def receive() -> Message:
                raise RuntimeError("the server's receive broke")

            client = Client()
            await _play(response, receive, client.send)
            assert b"".join(client.bodies).endswith(b"data: [DONE]\n\n") and client.ended
            assert replica.outstanding == 0
            pool.close()

    _run(go)
