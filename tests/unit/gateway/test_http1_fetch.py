"""`Pool.fetch`, the side calls' helper of the gateway's one client for engines (probes,
gauges, tokenize, the stored-responses probe, Ollama): the whole reply read, the connection
reused after a clean keep-alive reply and closed after anything else, every lease settled
(the slot back) on success, on a timeout, on a reply cut short and on a refused connect."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestra.gateway.upstream.http1.pool import ConnectFailed, Fetched, Pool
from orchestra.gateway.upstream.http1.protocol import UpstreamClosed

from .test_http1_pool import _ok, _read_request, _run, _server


def test_status_headers_and_body_come_back_and_the_connection_is_reused() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                return
            if len(seen) == 1:
                body = b'{"error": "no"}'
                writer.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            else:  # chunked: the helper hands back the decoded whole
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                writer.write(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
            await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, keepalive_s=30.0, connect_s=2.0)
            try:
                headers = {"content-type": "application/json"}
                reply = await pool.fetch(url, "POST", "/tokenize", headers, b"{}", 5.0)
                assert reply == Fetched(404, reply.headers, b'{"error": "no"}')
                assert reply.headers["content-type"] == "application/json"
                for _ in range(2):
                    reply = await pool.fetch(url, "GET", "/metrics", {}, b"", 5.0)
                    assert (reply.status, reply.body) == (200, b"abcdef")
                assert pool.opened == 1  # one keep-alive connection served all three
            finally:
                pool.close()

    _run(go)
    assert seen[0].startswith(b"POST /tokenize HTTP/1.1\r\n") and seen[0].endswith(b"\r\n\r\n{}")
    assert seen[1].startswith(b"GET /metrics HTTP/1.1\r\n")


def test_a_reply_that_closes_the_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_ok(b"bye", b"Connection: close\r\n"))
        await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, keepalive_s=30.0, connect_s=2.0)
            try:
                for _ in range(2):
                    assert (await pool.fetch(url, "GET", "/health", {}, b"", 5.0)).body == b"bye"
                assert pool.opened == 2
            finally:
                pool.close()

    _run(go)


def test_a_timeout_closes_the_connection_and_gives_the_slot_back() -> None:
    closed = asyncio.Event()
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await _read_request(reader)
        if calls == 1:  # the head, then nothing: the reply never ends
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
            await reader.read()  # EOF: the client closed its end
            closed.set()
            return
        writer.write(_ok())
        await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, keepalive_s=30.0, connect_s=2.0)  # one slot: a leak would block
            try:
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await pool.fetch(url, "GET", "/metrics", {}, b"", 0.2)
                assert time.monotonic() - started < 5.0
                await asyncio.wait_for(closed.wait(), 5.0)
                reply = await pool.fetch(url, "GET", "/metrics", {}, b"", 5.0)
                assert reply.status == 200 and pool.opened == 2
            finally:
                pool.close()

    _run(go)


def test_waiting_for_a_slot_counts_against_the_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(_ok())
            await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, keepalive_s=30.0, connect_s=2.0)
            try:
                held = await pool.request(url, "GET", "/v1/models", {}, b"")  # the one slot
                with pytest.raises(TimeoutError):
                    await pool.fetch(url, "GET", "/health", {}, b"", 0.1)
                await held.read_all()
                held.release()
                assert (await pool.fetch(url, "GET", "/health", {}, b"", 5.0)).status == 200
                assert pool.opened == 1  # the held connection, reused once released
            finally:
                pool.close()

    _run(go)


def test_a_reply_cut_short_raises_and_closes_and_the_next_call_reconnects() -> None:
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await _read_request(reader)
        if calls == 1:  # a crash mid-body
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
            await writer.drain()
            return  # the server helper closes the socket
        writer.write(_ok())
        await writer.drain()

    async def go() -> None:
        async with _server(handler) as url:
            pool = Pool(1, keepalive_s=30.0, connect_s=2.0)
            try:
                with pytest.raises(UpstreamClosed):
                    await pool.fetch(url, "GET", "/metrics", {}, b"", 5.0)
                assert (await pool.fetch(url, "GET", "/metrics", {}, b"", 5.0)).status == 200
                assert pool.opened == 2
            finally:
                pool.close()

    _run(go)


def test_a_refused_connect_is_connect_failed_and_leaks_no_slot() -> None:
    async def go() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()  # the port is free: nothing listens there
        pool = Pool(1, keepalive_s=30.0, connect_s=2.0)
        try:
            for _ in range(2):  # a slot kept by the first would make the second time out
                with pytest.raises(ConnectFailed):
                    await pool.fetch(f"http://127.0.0.1:{port}", "GET", "/health", {}, b"", 5.0)
        finally:
            pool.close()

    _run(go)
