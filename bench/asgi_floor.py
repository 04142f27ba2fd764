"""The floor under the gateway: the least an ASGI relay on the gateway's server costs.

`FloorRelay` is an ASGI app that does only what every proxied call must: read the request
body, send it upstream with the gateway's own client (`gateway/upstream/http1`), and relay the
answer, a whole reply or each SSE chunk as it comes (awaited and sent, as any ASGI app does).
No auth, pipeline, routing, metrics, SSE check or timers. It runs on the gateway's server
settings (uvicorn, uvloop, httptools, no access log), pinned to the gateway's core, as one more
leg of `--ceiling` and `--stream-ceiling`, so every run splits the gateway's cost three ways:
nginx (a C proxy), this floor (the server, ASGI and our client), the gateway (its features).

`python -m bench.asgi_floor --upstream URL --port N` serves it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from starlette.types import Message, Receive, Scope, Send

from orchestra.lifetime import spawn, stop_group

_CHAT_HEADERS = {"content-type": "application/json"}


class FloorRelay:
    """Every POST relayed to `upstream`; GET /health answers 200."""

    def __init__(self, upstream: str) -> None:
        from gateway.upstream.http1.pool import Pool

        self._upstream = upstream
        # made now, used only once the loop runs (its connections are opened per request)
        self._pool = Pool(max_per_upstream=1024, keepalive_s=30.0, connect_s=5.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self._pool.close)
        elif scope["path"] == "/health":
            await _reply(send, 200, b"text/plain", b"ok")
        else:
            await self._relay(scope, receive, send)

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        conn = await self._pool.request(self._upstream, "POST", scope["path"], _CHAT_HEADERS, body)
        try:
            content_type = conn.headers.get("content-type", "application/json").encode()
            if not content_type.startswith(b"text/event-stream"):
                await _reply(send, conn.status, content_type, await conn.read_all())
                return
            chunk = await conn.read()
            await send(_start(conn.status, content_type))
            while chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                chunk = await conn.read()
            await send({"type": "http.response.body", "body": b""})
        finally:
            conn.release()  # back to the pool after a whole response, closed otherwise


def _start(status: int, content_type: bytes) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type)],
    }


async def _reply(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    await send(_start(status, content_type))
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send, on_shutdown: Callable[[], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


@contextmanager
def asgi_floor(upstream: str, cpu: int | None) -> Iterator[tuple[str, int]]:
    """The floor relay in front of `upstream`, pinned to `cpu`: (its URL, its process group)."""
    from bench.run import REPO, _pin, wait_healthy
    from tests.fake_engine import free_port

    port = free_port()
    argv = [sys.executable, "-m", "bench.asgi_floor", "--upstream", upstream, "--port", str(port)]
    proc = spawn(argv, cwd=REPO, stdout=subprocess.DEVNULL)
    _pin(proc.pid, cpu)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, 30.0, "the ASGI floor relay")
        yield url, proc.pid
    finally:
        stop_group(proc, 10.0)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.asgi_floor")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(  # the gateway's server settings (gateway/__main__.py)
        FloorRelay(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        interface="asgi3",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
