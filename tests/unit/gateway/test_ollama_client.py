"""The Ollama backend on the gateway's one client for engines (`http1.Pool`), against the
fake Ollama app in this process: the probe, a whole answer and a relayed stream reuse one
keep-alive connection, and a stream whose client left before it started gives its
connection's slot back (a body generator never started never runs its `finally`)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from aiohttp import web
from starlette.types import Message

from orchestra.config import OllamaFallback
from orchestra.gateway.core.call import Call, new_call
from orchestra.gateway.core.reply import Reply
from orchestra.gateway.edge.outgoing import Outgoing
from orchestra.gateway.edge.routes import RouteTable
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.upstream.http1.pool import Pool
from orchestra.gateway.upstream.ollama_client import OllamaClient
from tests.fake_ollama import FakeOllama

TAG = "llama3.2:1b"


@asynccontextmanager
async def _ollama() -> AsyncIterator[str]:
    runner = web.AppRunner(FakeOllama([TAG]).app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the port, known before the site serves on it
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        sock.close()


def _call(stream: bool) -> Call:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    body = orjson.dumps(payload)
    chat = RouteTable().model_calls["/v1/chat/completions"]  # its traits name Ollama's path
    call = new_call(
        chat.path, body, payload, "m", request_id="r", stream=stream, traits=chat.traits
    )
    return call


async def _send_all(reply: Reply) -> bytes:
    """The reply as the edge writes it to a client."""
    sent: list[bytes] = []

    async def send(message: Message) -> None:
        sent.append(message.get("body", b""))

    await Outgoing(send, None).answer(reply, _never)
    return b"".join(sent)


def test_probe_answer_and_stream_share_one_connection_and_a_left_client_frees_its_slot() -> None:
    async def go() -> None:
        async with _ollama() as url:
            pool = Pool(1, keepalive_s=30.0, connect_s=2.0)  # one slot: a leak would block
            config = OllamaFallback(url=url, models={"m": TAG}, first_byte_timeout_s=5.0)
            client = OllamaClient(config, pool, GatewayMetrics())
            try:
                assert await client.check_once()
                call = _call(stream=False)
                answer = await client.forward(call)
                assert answer is not None and answer.status == 200
                assert orjson.loads(answer.body)["choices"][0]["message"]["content"]
                call = _call(stream=True)
                relayed = await client.forward(call)
                assert relayed is not None and relayed.status == 200
                body = await _send_all(relayed)
                assert body.rstrip().endswith(b"data: [DONE]")
                assert pool.opened == 1

                call = _call(stream=True)
                left = await client.forward(call)
                assert left is not None

                async def gone(message: Message) -> None:
                    raise OSError("the client left")

                try:
                    await Outgoing(gone, None).answer(left, _never)
                except OSError:
                    pass
                assert await asyncio.wait_for(client.check_once(), 5.0)  # the slot is back
            finally:
                pool.close()

    asyncio.run(asyncio.wait_for(go(), 30))


async def _never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")
