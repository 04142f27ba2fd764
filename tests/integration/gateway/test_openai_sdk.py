"""The official `openai` SDK against a real gateway and a fake engine: sync, async, streaming,
and the SDK's error classes for the gateway's and the upstream's errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

MESSAGES = [{"role": "user", "content": "hello there friend"}]


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess(name="m1") as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(engine: FakeEngineProcess) -> Iterator[GatewayProcess]:
    config = {
        "gateway": fast_gateway_section(free_port()),
        "servers": [
            {"name": "m1", "url": engine.url},
            {"name": "renamed", "url": engine.url},  # the engine knows no such model: its 404
            {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"},
        ],
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean(engine: FakeEngineProcess, gateway: GatewayProcess) -> Iterator[None]:
    reset_engine(engine)
    yield
    gateway.wait_ready("m1")


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0, timeout=10
    ) as sdk:
        yield sdk


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m1", messages=MESSAGES, max_tokens=3)
    assert reply.choices[0].message.content == "tok0 tok1 tok2"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 3)


def test_paris(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="m1",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20,
    )
    assert reply.choices[0].message.content == "The capital of France is Paris."
    assert reply.choices[0].finish_reason == "stop"


def test_completion_and_embeddings(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="m1", prompt="one two", max_tokens=2)
    assert completion.choices[0].text == "tok0 tok1"
    embeddings = client.embeddings.create(model="m1", input=["a", "b c"])
    assert [len(item.embedding) for item in embeddings.data] == [8, 8]
    assert embeddings.usage.prompt_tokens == 3


def test_streaming_chat(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m1",
        messages=MESSAGES,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_raw_response_carries_request_id(client: openai.OpenAI, engine: FakeEngineProcess) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="m1",
        messages=MESSAGES,
        max_tokens=1,
        extra_headers={"x-request-id": "sdk-req-1"},
    )
    assert raw.headers["x-request-id"] == "sdk-req-1"
    assert raw.parse().choices[0].message.content == "tok0"
    assert engine.stats()["records"][-1]["x_request_id"] == "sdk-req-1"


def test_async_client(gateway: GatewayProcess) -> None:
    async def scenario() -> tuple[list[str], str]:
        async with openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0, timeout=10
        ) as sdk:
            replies = await asyncio.gather(
                *(
                    sdk.chat.completions.create(model="m1", messages=MESSAGES, max_tokens=n)
                    for n in (1, 2, 3)
                )
            )
            stream = await sdk.completions.create(model="m1", prompt="x", max_tokens=4, stream=True)
            parts = [chunk.choices[0].text async for chunk in stream]
        return [r.choices[0].message.content or "" for r in replies], "".join(parts)

    contents, streamed = asyncio.run(scenario())
    assert contents == ["tok0", "tok0 tok1", "tok0 tok1 tok2"]
    assert streamed == "tok0 tok1 tok2 tok3"


def test_async_errors(gateway: GatewayProcess) -> None:
    async def scenario() -> None:
        async with openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0
        ) as sdk:
            with pytest.raises(openai.NotFoundError):
                await sdk.chat.completions.create(model="nope", messages=MESSAGES)

    asyncio.run(scenario())


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert "gpt-9" in info.value.message


def test_empty_model_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="", messages=MESSAGES)
    assert info.value.param == "model"


def test_upstream_404_reaches_the_sdk_unchanged(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="renamed", messages=MESSAGES)
    assert info.value.body == {
        "message": "The model `renamed` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }


def test_upstream_errors_map_to_sdk_classes(
    client: openai.OpenAI, engine: FakeEngineProcess
) -> None:
    engine.set_fault("error", status=400, count=1)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m1", messages=MESSAGES)
    engine.set_fault("429", count=1)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m1", messages=MESSAGES)
    engine.set_fault("500", count=1)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m1", messages=MESSAGES)
    assert info.value.status_code == 500


def test_no_upstream_is_503(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="dead", messages=MESSAGES)
    assert info.value.status_code == 503
    assert info.value.code == "no_upstream_available"


def test_models_list(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"m1", "renamed", "dead"}
    assert models["m1"].owned_by == "orchestra"
    assert (models["m1"].model_extra or {})["state"] == "ready"
