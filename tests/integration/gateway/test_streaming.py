"""SSE relay: bytes pass through untouched; a failure after the first byte becomes one final
`data: {"error": ...}` event; a client that leaves cancels the upstream request."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

IDLE_READ_S = 0.5
MESSAGES = [{"role": "user", "content": "stream to me"}]
STREAM = {"model": "s", "messages": MESSAGES, "max_tokens": 6, "stream": True}


class Engine:
    """The module's engine; a test that crashes it gets a new one on the same port."""

    def __init__(self) -> None:
        self.fake = FakeEngineProcess(name="s").start()

    def revive(self) -> None:
        # A crash may still be under way (its sockets closed, the process not yet reaped):
        # an engine that does not answer /health counts as crashed too.
        crashed = self.fake.proc is not None and self.fake.proc.poll() is not None
        if crashed or not self.fake.healthy():
            self.fake.stop()
            self.fake = FakeEngineProcess(name="s", port=self.fake.port).start()


@pytest.fixture(scope="module")
def engine_holder() -> Iterator[Engine]:
    holder = Engine()
    yield holder
    holder.fake.stop()


@pytest.fixture(scope="module")
def gateway(engine_holder: Engine) -> Iterator[GatewayProcess]:
    config = {
        "gateway": fast_gateway_section(
            free_port(), timeouts={"idle_read_s": IDLE_READ_S, "first_byte_s": 2.0}
        ),
        "servers": [{"name": "s", "url": engine_holder.fake.url}],
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture
def engine(engine_holder: Engine, gateway: GatewayProcess) -> Iterator[FakeEngineProcess]:
    reset_engine(engine_holder.fake)
    yield engine_holder.fake
    engine_holder.revive()
    reset_engine(engine_holder.fake)
    gateway.wait_ready()


@pytest.fixture
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.fixture
def sdk(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0, timeout=10
    ) as client:
        yield client


def _events(raw: bytes) -> list[bytes]:
    return [event for event in raw.split(b"\n\n") if event]


def _stable(raw: bytes) -> bytes:
    return re.sub(rb'"(id|created)":("[^"]*"|\d+)', b"", raw)


def test_stream_bytes_pass_through_unchanged(http: httpx.Client, engine: FakeEngineProcess) -> None:
    body = {**STREAM, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        via_gateway = b"".join(reply.iter_raw())
    with httpx.stream("POST", engine.url + "/v1/chat/completions", json=body) as reply:
        direct = b"".join(reply.iter_raw())
    assert _stable(via_gateway) == _stable(direct)
    assert via_gateway.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in via_gateway


def test_completions_stream(http: httpx.Client) -> None:
    body = {"model": "s", "prompt": "x", "max_tokens": 3, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as reply:
        events = _events(b"".join(reply.iter_raw()))
    texts = [json.loads(e[6:])["choices"][0]["text"] for e in events[:-1]]
    assert texts == ["tok0", " tok1", " tok2"]
    assert events[-1] == b"data: [DONE]"


MID_STREAM_FAULTS = ["cut-mid-stream", "crash-mid-stream", "hang-mid-stream", "no-done"]


@pytest.mark.parametrize("fault", MID_STREAM_FAULTS)
def test_failure_after_first_byte_ends_with_one_error_event(
    http: httpx.Client, engine: FakeEngineProcess, gateway: GatewayProcess, fault: str
) -> None:
    errors_before = gateway.metric("orchestra_stream_errors_total", model="s")
    engine.set_fault(fault, count=1)
    with http.stream("POST", "/v1/chat/completions", json=STREAM) as reply:
        assert reply.status_code == 200  # decided before the failure: headers went first
        raw = b"".join(reply.iter_raw())  # the stream ends: no hang, no transport error
    events = _events(raw)
    assert raw.endswith(b"\n\n")
    assert events[-1].startswith(b"data: {")
    error = json.loads(events[-1][len(b"data: ") :])
    assert set(error) == {"error"}
    assert error["error"]["type"] == "upstream_error"
    assert error["error"]["code"] == "stream_interrupted"
    assert sum(b'"error"' in e for e in events) == 1
    assert b"data: [DONE]" not in raw
    chunks = [e for e in events[:-1] if b"chat.completion.chunk" in e]
    # Upstream bytes before the break arrive intact: 2 events for the breaks, all 7 (the role
    # chunk and 6 tokens) for no-done.
    assert len(chunks) == (7 if fault == "no-done" else 2)
    assert all(json.loads(c[6:])["object"] == "chat.completion.chunk" for c in chunks)
    if fault == "hang-mid-stream":
        assert str(IDLE_READ_S).rstrip("0") in error["error"]["message"]
    wait_until(
        lambda: gateway.metric("orchestra_stream_errors_total", model="s") == errors_before + 1,
        what="stream error counted",
    )
    assert gateway.metric("orchestra_inflight_requests", model="s") == 0


@pytest.mark.parametrize("fault", MID_STREAM_FAULTS)
def test_sdk_raises_api_error_while_iterating(
    sdk: openai.OpenAI, engine: FakeEngineProcess, fault: str
) -> None:
    engine.set_fault(fault, count=1)
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        stream = sdk.chat.completions.create(
            model="s", messages=MESSAGES, max_tokens=6, stream=True
        )
        with stream:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(info.value, openai.APIStatusError)  # raised mid-stream, not at start
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "stream_interrupted"
    expected = ["", "tok0", " tok1", " tok2", " tok3", " tok4", " tok5"]
    assert received == (expected if fault == "no-done" else expected[:2])


def test_failure_before_first_byte_is_retried_not_streamed(
    http: httpx.Client, engine: FakeEngineProcess
) -> None:
    engine.set_fault("503", count=1)
    with http.stream("POST", "/v1/chat/completions", json=STREAM) as reply:
        assert reply.status_code == 503  # no other replica: the upstream's own answer
        assert reply.headers["content-type"] == "application/json"
        assert json.loads(reply.read())["error"]["message"] == "Injected fault: 503"


def _slow_stream(engine: FakeEngineProcess) -> dict[str, object]:
    engine._call("/fake/config", {"token_rate": 20})
    return {**STREAM, "max_tokens": 200}  # ten seconds of tokens


def test_client_disconnect_cancels_upstream(
    http: httpx.Client, engine: FakeEngineProcess, gateway: GatewayProcess
) -> None:
    body = _slow_stream(engine)
    left_before = gateway.metric("orchestra_requests_total", model="s", status="499")
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        chunks = reply.iter_raw()  # kept: a dropped iterator closes the response at once
        assert next(chunks).startswith(b"data: ")
        assert engine.stats()["active"] == 1
        assert gateway.metric("orchestra_inflight_requests", model="s") == 1
    # Leaving the block closes the connection mid-stream.
    stats = wait_until(
        lambda: (s := engine.stats())["cancelled"] == 1 and s["active"] == 0 and s,
        what="upstream request cancelled",
    )
    assert stats["records"][-1]["outcome"] == "cancelled"
    wait_until(
        lambda: gateway.metric("orchestra_inflight_requests", model="s") == 0,
        what="gateway in-flight back to 0",
    )
    assert gateway.metric("orchestra_requests_total", model="s", status="499") == left_before + 1
    assert gateway.health()["models"]["s"] == "ready"  # a client leaving is not the replica's fault


def test_sdk_close_cancels_upstream(
    sdk: openai.OpenAI, engine: FakeEngineProcess, gateway: GatewayProcess
) -> None:
    _slow_stream(engine)
    stream = sdk.chat.completions.create(model="s", messages=MESSAGES, max_tokens=200, stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    assert engine.stats()["active"] == 1
    stream.close()
    wait_until(lambda: engine.stats()["cancelled"] == 1, what="upstream request cancelled")
    wait_until(
        lambda: gateway.metric("orchestra_inflight_requests", model="s") == 0,
        what="gateway in-flight back to 0",
    )


def test_many_concurrent_streams_settle(gateway: GatewayProcess, engine: FakeEngineProcess) -> None:
    async def one(client: httpx.AsyncClient, i: int) -> bytes:
        body = {**STREAM, "max_tokens": 5 + i % 3}
        async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            return b"".join([chunk async for chunk in reply.aiter_raw()])

    async def scenario() -> list[bytes]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            return await asyncio.gather(*(one(client, i) for i in range(30)))

    bodies = asyncio.run(scenario())
    assert all(b.endswith(b"data: [DONE]\n\n") for b in bodies)
    assert engine.stats()["completed"] == 30
    assert gateway.metric("orchestra_inflight_requests", model="s") == 0


def test_client_leaving_before_the_first_token_settles_everything(
    gateway: GatewayProcess, engine: FakeEngineProcess
) -> None:
    """The client gives up while the engine is still before its first token (queued): once the
    upstream's first byte comes, the gateway finds the client gone, cancels the upstream and
    settles its counters (no response generator left unstarted, nothing leaked)."""
    engine._call("/fake/config", {"ttft_ms": 600, "token_rate": 20})
    left_before = gateway.metric("orchestra_requests_total", model="s", status="499")
    body = {**STREAM, "max_tokens": 200}
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=gateway.url) as client:
        client.post("/v1/chat/completions", json=body, timeout=0.2)
    wait_until(lambda: engine.stats()["cancelled"] == 1, what="upstream request cancelled")
    wait_until(
        lambda: gateway.metric("orchestra_inflight_requests", model="s") == 0,
        what="gateway in-flight back to 0",
    )
    assert gateway.metric("orchestra_requests_total", model="s", status="499") == left_before + 1
    assert engine.stats()["completed"] == 0
