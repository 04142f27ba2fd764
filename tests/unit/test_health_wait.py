"""orchestra.health: the one wait for a server's /health, async (the supervisor's READY wait)
and synchronous (up, the Ray actor, the bench, the tests), against a small in-process server
that answers 503 a given number of times before its first 200."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Callable, Iterator

import aiohttp
import pytest

from orchestra.health import NotAlive, probe_sync, wait_healthy, wait_healthy_sync
from tests.fake_engine import free_port


class _Health(http.server.ThreadingHTTPServer):
    """GET /health: 503 for the first `unready` calls, then 200 with `body`."""

    def __init__(self, unready: int, body: bytes = b'{"status": "ok"}') -> None:
        self.unready, self.body, self.calls = unready, body, 0
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Health

    def do_GET(self) -> None:
        self.server.calls += 1
        ready = self.server.calls > self.server.unready
        body = self.server.body if ready else b"loading"
        self.send_response(200 if ready and self.path == "/health" else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


Serve = Callable[..., _Health]


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[_Health] = []

    def start(unready: int, body: bytes = b'{"status": "ok"}') -> _Health:
        server = _Health(unready, body)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_sync_returns_once_it_answers_200_after_some_503s(serve: Serve) -> None:
    server = serve(3)
    wait_healthy_sync(server.url, timeout_s=10, interval_s=0.01, probe_timeout_s=1)
    assert server.calls == 4


def test_sync_times_out_naming_the_url_and_the_last_error() -> None:
    url = _closed_url()
    began = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        wait_healthy_sync(url, timeout_s=0.3, interval_s=0.05, probe_timeout_s=1)
    assert time.monotonic() - began < 5
    message = str(caught.value)
    assert url + "/health" in message and "0.3s" in message and "refused" in message.lower()


def test_sync_last_error_is_the_status_and_accept_checks_the_body(serve: Serve) -> None:
    server = serve(1000)
    with pytest.raises(TimeoutError, match="HTTP 503"):
        wait_healthy_sync(server.url, timeout_s=0.2, interval_s=0.02, probe_timeout_s=1)
    degraded = serve(0, b'{"status": "degraded"}')
    with pytest.raises(TimeoutError, match="not accepted"):
        wait_healthy_sync(
            degraded.url,
            timeout_s=0.2,
            interval_s=0.02,
            probe_timeout_s=1,
            accept=lambda body: b'"ok"' in body,
        )
    assert probe_sync(degraded.url + "/health", 1) is None  # a 200 without `accept`


def test_sync_ends_with_not_alive_once_the_process_is_gone() -> None:
    answers = iter([True, True, False])
    with pytest.raises(NotAlive, match="stopped before it answered 200"):
        wait_healthy_sync(
            _closed_url(),
            timeout_s=60,
            interval_s=0.01,
            probe_timeout_s=1,
            is_alive=lambda: next(answers),
        )


def test_async_polls_a_custom_path_until_200(serve: Serve) -> None:
    server = serve(2)

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(
                server.url, session=session, timeout_s=10, interval_s=0.01, probe_timeout_s=1
            )
            with pytest.raises(TimeoutError, match=r"/ready did not answer 200.*HTTP 503"):
                await wait_healthy(
                    server.url,
                    session=session,
                    timeout_s=0.1,
                    interval_s=0.02,
                    probe_timeout_s=1,
                    path="/ready",  # every path but /health answers 503
                )

    asyncio.run(main())
    assert server.calls >= 3


def test_async_interrupt_ends_the_pause_at_once() -> None:
    """The supervisor's case: the engine exits while its READY wait pauses between probes."""

    async def main() -> float:
        interrupt = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            loop = asyncio.get_running_loop()
            loop.call_later(0.2, interrupt.set)
            began = time.monotonic()
            with pytest.raises(NotAlive):
                await wait_healthy(
                    _closed_url(),
                    session=session,
                    timeout_s=60,
                    interval_s=30,  # one pause far longer than the test: only the event ends it
                    probe_timeout_s=1,
                    interrupt=interrupt,
                )
            return time.monotonic() - began

    assert asyncio.run(main()) < 10
