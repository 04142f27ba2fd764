"""An engine that dies mid-stream: each API's official SDK raises, and never returns the cut
answer as a whole one.

The gateway ends a failed stream with an error event in the call's dialect (`core/sse.py`):
chat/completions' `data: {"error": ...}` (the openai SDK raises `APIError`), Anthropic's
`event: error` (the anthropic SDK raises `APIStatusError`) and the Responses API's `error`
event carrying an `error` object (the openai SDK raises `APIError`). A plain connection drop
would raise `APIConnectionError` instead (or, on Anthropic's and the Responses paths, end the
stream as if it were whole): the tests ask for the exact classes.

Each test starts its own slow engine on the module's port and SIGKILLs it about a second into
the stream.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator

import anthropic
import openai
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

TOKEN_RATE = 5  # events per second: a 100-token answer takes 20 s
MAX_TOKENS = 100
KILL_AFTER_S = 1.0  # into the stream
RAISE_WITHIN_S = 4.0  # after the kill


@pytest.fixture(scope="module")
def engine_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway(engine_port: int) -> Iterator[GatewayProcess]:
    config = {
        "gateway": fast_gateway_section(free_port()),
        "servers": [{"name": "m", "url": f"http://127.0.0.1:{engine_port}"}],
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture
def engine(engine_port: int, gateway: GatewayProcess) -> Iterator[FakeEngineProcess]:
    """A fresh slow engine for each test (the last one was killed)."""
    fake = FakeEngineProcess("--token-rate", str(TOKEN_RATE), name="m", port=engine_port)
    fake.start()
    try:
        gateway.wait_ready("m")
        yield fake
    finally:
        fake.stop()


def _raises_soon(
    engine: FakeEngineProcess, error: type[Exception], read: Callable[[int], Iterable[object]]
) -> Exception:
    """`read(max_tokens)` opens a stream and yields its events. A short one first, whole (the
    SDK builds its event types on first use: seconds on a busy machine, while events queue);
    then a long one, the engine SIGKILLed once it is `KILL_AFTER_S` old: it must raise exactly
    `error`, within `RAISE_WITHIN_S` of the kill, and never end as if whole."""
    assert list(read(2))
    killed: list[float] = []
    ended: list[bool] = []
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        for _ in read(MAX_TOKENS):
            if not killed and time.monotonic() - started >= KILL_AFTER_S:
                assert engine.proc is not None and engine.proc.poll() is None, "stream too short"
                os.killpg(engine.proc.pid, signal.SIGKILL)
                killed.append(time.monotonic())
        ended.append(True)
    assert killed and not ended, "the stream ended as if whole"
    assert type(caught.value) is error, repr(caught.value)
    assert time.monotonic() - killed[0] < RAISE_WITHIN_S
    return caught.value


def _openai(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="none", max_retries=0, timeout=20)


def test_chat_completions_stream_raises(gateway: GatewayProcess, engine: FakeEngineProcess) -> None:
    client = _openai(gateway)
    messages = [{"role": "user", "content": "tell me"}]

    def read(tokens: int) -> Iterable[object]:
        return client.chat.completions.create(
            model="m", messages=messages, max_tokens=tokens, stream=True
        )

    exc = _raises_soon(engine, openai.APIError, read)
    assert "connection lost mid-stream" in str(exc)


def test_completions_stream_raises(gateway: GatewayProcess, engine: FakeEngineProcess) -> None:
    client = _openai(gateway)

    def read(tokens: int) -> Iterable[object]:
        return client.completions.create(
            model="m", prompt="tell me", max_tokens=tokens, stream=True
        )

    exc = _raises_soon(engine, openai.APIError, read)
    assert "connection lost mid-stream" in str(exc)


def test_responses_stream_raises(gateway: GatewayProcess, engine: FakeEngineProcess) -> None:
    client = _openai(gateway)
    finals: list[str] = []

    def read(tokens: int) -> Iterator[object]:
        with client.responses.stream(model="m", input="tell me", max_output_tokens=tokens) as s:
            yield from s
            finals.append(s.get_final_response().status or "")

    exc = _raises_soon(engine, openai.APIError, read)
    assert "connection lost mid-stream" in str(exc)
    assert finals == ["completed"]  # the short one's only


def test_anthropic_messages_stream_raises(
    gateway: GatewayProcess, engine: FakeEngineProcess
) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="none", max_retries=0, timeout=20)
    finals: list[str | None] = []
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "tell me"}]

    def read(tokens: int) -> Iterator[object]:
        with client.messages.stream(model="m", max_tokens=tokens, messages=messages) as s:
            yield from s
            finals.append(s.get_final_message().stop_reason)  # None: a cut answer

    exc = _raises_soon(engine, anthropic.APIStatusError, read)
    assert isinstance(exc, anthropic.APIStatusError) and isinstance(exc.body, dict)
    assert exc.body["type"] == "error" and exc.body["error"]["type"] == "api_error"
    assert "connection lost mid-stream" in exc.body["error"]["message"]
    assert finals == ["max_tokens"]  # the short one's only
