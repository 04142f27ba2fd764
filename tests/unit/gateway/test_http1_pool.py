"""The proxied calls' upstream client (`gateway/upstream/http1`) against a raw asyncio server
that answers with exactly the bytes a test gives: keep-alive reuse, the pool's bound,
content-length, chunked and until-close bodies, a keep-alive socket the upstream closed, a
request given up mid-body, the flow-control bound, connect failures, a body cut short."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from orchestra.gateway.upstream.http1.pool import ConnectFailed, Pool, UpstreamGone
from orchestra.gateway.upstream.http1.protocol import UpstreamClosed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
JSON = b'{"ok": true}'


def _ok(body: bytes = JSON, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (the client always sends a Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[str]:
    """A server whose handlers are cancelled when the test is done with it (Python 3.11's
    `wait_closed` does not wait for them; 3.12's waits for every client to leave)."""
    handlers: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


def test_keep_alive_reuses_one_connection_and_forwards_headers_right() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                seen.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(_ok())
            await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(4, 30.0, 2.0)
            headers = {"content-type": "application/json", "connection": "close", "te": "x"}
            headers |= {"host": "evil", "content-length": "1", "x-request-id": "r1"}
            for _ in range(3):
                conn = await pool.request(url, "POST", "/v1/x", headers, b"{}")
                assert conn.status == 200 and await conn.read_all() == JSON
                conn.release()
            assert pool.opened == 1
            pool.close()

    _run(go)
    assert len(seen) == 3
    head, body = seen[0].split(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"post /v1/x http/1.1"
    assert b"x-request-id: r1" in lines and b"content-type: application/json" in lines
    assert [ln for ln in lines if ln.startswith(b"host:")] == [b"host: " + _host(seen[0])]
    assert [ln for ln in lines if ln.startswith(b"content-length:")] == [b"content-length: 2"]
    assert not any(ln.startswith((b"connection:", b"te:")) for ln in lines)
    assert body == b"{}"


def _host(request: bytes) -> bytes:
    for line in request.split(b"\r\n"):
        if line.lower().startswith(b"host:"):
            return line.split(b":", 1)[1].strip().lower()
    raise AssertionError("no host header")


def test_chunked_and_until_close_bodies_are_decoded() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        writer.close()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(4, 30.0, 2.0)
            conn = await pool.request(url, "POST", "/", {}, b"")
            chunks = []
            while data := await conn.read():
                chunks.append(data)
            assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\n" and len(chunks) == 2
            conn.release()
            conn = await pool.request(url, "POST", "/", {}, b"")
            assert await conn.read_all() == b"until the end"
            conn.release()  # not reusable: closed
            assert pool.opened == 1 and conn.closed
            pool.close()

    _run(go)


def test_the_bound_holds_requests_until_a_connection_is_free() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            await release.wait()
            writer.write(_ok())
            await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(2, 30.0, 2.0)

            async def one() -> bytes:
                conn = await pool.request(url, "POST", "/", {}, b"")
                body = await conn.read_all()
                conn.release()
                return body

            tasks = [asyncio.create_task(one()) for _ in range(5)]
            await asyncio.sleep(0.2)
            assert pool.opened == 2 and not any(t.done() for t in tasks)
            release.set()
            assert await asyncio.gather(*tasks) == [JSON] * 5
            assert pool.opened == 2
            pool.close()

    _run(go)


def test_a_keep_alive_socket_the_upstream_closed_is_not_reused_or_fails_retryably() -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await _read_request(reader)
        requests += 1
        writer.write(_ok())  # keep-alive by default in HTTP/1.1 ...
        await writer.drain()
        if requests == 1:
            writer.close()  # ... but closed while the client holds it idle
            return
        # The second connection: answered, then the next request on it is dropped unanswered
        # (the upstream closed it in the moment the request was on its way).
        await _read_request(reader)
        writer.close()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(4, 30.0, 2.0)
            conn = await pool.request(url, "POST", "/", {}, b"")
            assert await conn.read_all() == JSON
            conn.release()
            await asyncio.sleep(0.1)  # the close arrives while it is idle
            conn = await pool.request(url, "POST", "/", {}, b"")
            assert await conn.read_all() == JSON and pool.opened == 2
            conn.release()
            with pytest.raises(UpstreamClosed) as caught:
                await pool.request(url, "POST", "/", {}, b"")
            assert isinstance(caught.value, OSError)  # what the proxy retries ("disconnect")
            pool.close()

    _run(go)


def test_closing_mid_body_closes_the_upstream_socket() -> None:
    saw_eof = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        if await reader.read(1) == b"":
            saw_eof.set()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, 30.0, 2.0)
            conn = await pool.request(url, "POST", "/", {}, b"")
            assert await conn.read() == b"hello"
            conn.set_exception(RuntimeError("client gone"))
            with pytest.raises(RuntimeError):
                await conn.read()
            conn.release()  # not clean: closed, the slot back
            await asyncio.wait_for(saw_eof.wait(), 5)
            assert conn.closed
            # The slot came back: a new request may open a connection (bound 1).
            again = await asyncio.wait_for(pool.request(url, "POST", "/", {}, b""), 5)
            assert again.status == 200 and pool.opened == 2
            again.close()
            pool.close()

    _run(go)


def test_a_reader_that_falls_behind_pauses_the_socket() -> None:
    total = 8 * 1024 * 1024
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        while sent < total:
            writer.write(block)
            sent += len(block)
            await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, 30.0, 2.0, high_water=64 * 1024)
            conn = await pool.request(url, "POST", "/", {}, b"")
            await asyncio.sleep(0.5)  # the reader does not read
            assert conn.buffered <= 64 * 1024 + 256 * 1024  # one socket read past the mark
            assert sent < total  # the upstream is held back (socket buffers fill, not memory)
            got = len(await conn.read_all())
            assert got == total
            conn.release()
            pool.close()

    _run(go)


def test_connect_failures_are_connect_failed_within_connect_s() -> None:
    async def go() -> None:
        pool = Pool(1, 30.0, 0.3)
        with pytest.raises(ConnectFailed):  # nobody listens there
            await pool.request(f"http://127.0.0.1:{_closed_port()}", "POST", "/", {}, b"")
        # A connect that never completes (a black-holed address; faked: this sandbox's network
        # answers every address) gives up after connect_s.
        loop = asyncio.get_running_loop()

        async def never(*args: object, **kwargs: object) -> None:
            await asyncio.sleep(3600)

        loop.create_connection = never  # type: ignore[method-assign,assignment]
        started = time.monotonic()
        with pytest.raises(ConnectFailed, match="timed out"):
            await pool.request("http://192.0.2.1:9", "POST", "/", {}, b"")
        assert 0.25 < time.monotonic() - started < 2.0
        pool.close()

    _run(go)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_upstream_that_closes_mid_body_fails_the_read() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, 30.0, 2.0)
            conn = await pool.request(url, "POST", "/", {}, b"")
            with pytest.raises(UpstreamClosed):
                await conn.read_all()
            conn.release()
            assert conn.closed
            pool.close()

    _run(go)


def test_idle_connections_are_closed_after_keepalive_s() -> None:
    closed_by_client = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_ok())
        await writer.drain()
        if await reader.read(1) == b"":
            closed_by_client.set()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(4, 0.2, 2.0)
            conn = await pool.request(url, "POST", "/", {}, b"")
            await conn.read_all()
            conn.release()
            assert not conn.closed  # idle in the pool
            started = time.monotonic()
            await asyncio.wait_for(closed_by_client.wait(), 5)
            assert conn.closed and 0.15 < time.monotonic() - started < 2.0
            pool.close()

    _run(go)


def test_a_late_failure_for_an_ended_lease_does_not_reach_the_next_request() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await _read_request(reader)
            writer.write(_ok())
            await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, 30.0, 2.0)
            conn = await pool.request(url, "POST", "/", {}, b"")
            lease = conn.leases
            await conn.read_all()
            conn.release()
            again = await pool.request(url, "POST", "/", {}, b"")
            assert again is conn  # reused
            conn.fail_lease(lease, RuntimeError("the first request's client left"))
            assert await again.read_all() == JSON
            again.release()
            pool.close()

    _run(go)


def test_a_path_with_a_line_break_or_space_is_percent_encoded() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_request(reader))
        writer.write(_ok())
        await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, 30.0, 2.0)
            # a stored response's id comes from the client, decoded by the server
            conn = await pool.request(url, "GET", "/v1/responses/a b\r\nX-Evil: 1?s=1", {}, b"")
            assert await conn.read_all() == JSON
            conn.release()
            pool.close()

    _run(go)
    request_line, rest = seen[0].split(b"\r\n", 1)
    assert request_line == b"GET /v1/responses/a%20b%0D%0AX-Evil:%201?s=1 HTTP/1.1"
    assert b"x-evil" not in rest.lower()


def test_a_second_response_to_one_request_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_ok() + _ok())  # one response too many, in the same segment
        await writer.drain()
        await reader.read(1)

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, 30.0, 2.0)
            conn = await pool.request(url, "POST", "/", {}, b"")
            assert conn.status == 200 and await conn.read_all() == JSON
            conn.release()
            assert conn.closed  # closed, not back in the pool
            pool.close()

    _run(go)


def test_drop_fails_the_requests_in_flight_to_a_silent_upstream_at_once() -> None:
    """An upstream that went silent (its node vanished: no FIN, no RST) and was declared gone:
    a stream mid-body and a request waiting for its head both fail now with `UpstreamGone`
    (retryable before the head: an `UpstreamClosed`), its idle connection is closed, and the
    slots come back as each request settles."""
    silent = asyncio.Event()  # set at the end: the handlers may go

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        if b"/stream" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        elif b"/quick" in request:
            writer.write(_ok())  # then the keep-alive connection stays open, idle
        await writer.drain()
        await silent.wait()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(4, 30.0, 2.0)
            stream = await pool.request(url, "POST", "/stream", {}, b"")
            assert await stream.read() == b"hello"
            reading = asyncio.ensure_future(stream.read())
            heading = asyncio.ensure_future(pool.request(url, "POST", "/head", {}, b""))
            quick = await pool.request(url, "POST", "/quick", {}, b"")
            assert await quick.read_all() == JSON
            quick.release()  # idle now
            assert pool.opened == 3
            await asyncio.sleep(0.05)
            assert not reading.done() and not heading.done()  # silence: nothing ends them
            assert pool.drop([url, "http://127.0.0.1:1"], "node left") == 2
            with pytest.raises(UpstreamGone, match="node left"):
                await asyncio.wait_for(reading, 1)
            with pytest.raises(UpstreamClosed):
                await asyncio.wait_for(heading, 1)
            assert quick.closed  # the idle one: closed, never reused
            stream.close()
            assert pool.drop([url], "again") == 0  # every lease settled
            silent.set()
            pool.close()

    _run(go)
