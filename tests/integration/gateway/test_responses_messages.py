"""OpenAI's Responses API and Anthropic's Messages API through the gateway, with the official
SDKs, on two fake replicas of one model (fake engines speak both APIs, and keep stored
responses in their own memory as vLLM does).

A stored response's follow-ups (retrieve, `previous_response_id`) reach the engine that stored
it, also through a gateway that never saw it (found by asking the engines), and an engine that
lost it answers 404 — never another replica's reply.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from orchestra.gateway.protection.keys import hash_key
from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(120)
KEY = "sk-responses"


@pytest.fixture(scope="module")
def engines() -> Iterator[list[FakeEngineProcess]]:
    with FakeEngineProcess(name="m") as one, FakeEngineProcess(name="m") as two:
        yield [one, two]


def _config(engines: list[FakeEngineProcess]) -> dict[str, object]:
    section = fast_gateway_section(free_port())
    section["api_keys"] = [{"name": "k", "sha256": hash_key(KEY)}]
    return {
        "gateway": section,
        "servers": [{"name": "m", "replicas": [{"url": e.url} for e in engines]}],
        "aliases": {"assistant": "m"},
        "ensembles": [{"name": "both", "models": ["m", "m"], "strategy": "all"}],
    }


@pytest.fixture(scope="module")
def gateway(engines: list[FakeEngineProcess]) -> Iterator[GatewayProcess]:
    with GatewayProcess(_config(engines)) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean(engines: list[FakeEngineProcess]) -> None:
    for engine in engines:
        reset_engine(engine)


def _sdk(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)


def _holder(engines: list[FakeEngineProcess], response_id: str) -> FakeEngineProcess:
    """The engine whose stats show it created `response_id`... by asking each directly."""
    holders = [
        e for e in engines if httpx.get(f"{e.url}/v1/responses/{response_id}").status_code == 200
    ]
    assert len(holders) == 1
    return holders[0]


def _paths(engine: FakeEngineProcess) -> list[str]:
    return [r["path"] for r in engine.stats()["records"]]


def test_create_retrieve_and_follow_up_reach_the_engine_that_stored_it(
    gateway: GatewayProcess, engines: list[FakeEngineProcess]
) -> None:
    client = _sdk(gateway)
    first = client.responses.create(model="assistant", input="hello there", max_output_tokens=3)
    assert first.output_text == "tok0 tok1 tok2" and first.id.startswith("resp_")
    holder = _holder(engines, first.id)
    other = next(e for e in engines if e is not holder)
    for engine in engines:
        reset_engine(engine)
    previous = first.id
    for _ in range(4):  # round robin would alternate: every follow-up stays on the holder
        reply = client.responses.create(model="m", input="go on", previous_response_id=previous)
        assert reply.previous_response_id == previous
        previous = reply.id
    assert client.responses.retrieve(first.id).id == first.id
    assert _paths(other) == []
    assert _paths(holder).count("/v1/responses") == 4


def test_a_stream_passes_through_typed_and_its_id_is_remembered(
    gateway: GatewayProcess, engines: list[FakeEngineProcess]
) -> None:
    client = _sdk(gateway)
    with client.responses.stream(model="m", input="hello", max_output_tokens=4) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 4
    holder = _holder(engines, final.id)
    for engine in engines:
        reset_engine(engine)
    assert client.responses.retrieve(final.id).output_text == "tok0 tok1 tok2 tok3"
    assert _paths(holder) == [f"/v1/responses/{final.id}"]  # no probing: it was remembered


def test_a_gateway_that_never_saw_the_id_finds_its_engine(
    gateway: GatewayProcess, engines: list[FakeEngineProcess]
) -> None:
    created = _sdk(gateway).responses.create(model="m", input="hi")
    with GatewayProcess(_config(engines)) as fresh:
        again = _sdk(fresh).responses.retrieve(created.id)
        follow = _sdk(fresh).responses.create(
            model="m", input="more", previous_response_id=created.id
        )
    assert again.id == created.id and follow.previous_response_id == created.id


def test_a_lost_or_unknown_response_is_a_404(
    gateway: GatewayProcess, engines: list[FakeEngineProcess]
) -> None:
    client = _sdk(gateway)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.retrieve("resp_nobodyhasthis")
    assert unknown.value.body["code"] == "response_not_found"  # type: ignore[index]
    created = client.responses.create(model="m", input="hi")
    holder = _holder(engines, created.id)
    holder.stop()  # the engine restarts on its port: its memory (the response) is gone
    holder.start()
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input="more", previous_response_id=created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_workloads_that_cannot_hold_a_stored_conversation_say_so(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.BadRequestError) as ensemble:
        _sdk(gateway).responses.create(model="both", input="hi")
    assert "chat and completions only" in str(ensemble.value)


def _anthropic(gateway: GatewayProcess, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


def test_anthropic_messages_reply_stream_and_count(gateway: GatewayProcess) -> None:
    client = _anthropic(gateway)  # the SDK sends its key as x-api-key
    message = client.messages.create(
        model="assistant",
        max_tokens=16,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "The capital of France is Paris."
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 6
    with client.messages.stream(
        model="m", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok0 tok1 tok2" and final.stop_reason == "max_tokens"
    counted = client.messages.count_tokens(
        model="m", messages=[{"role": "user", "content": "one two three"}]
    )
    assert counted.input_tokens == 3


def test_anthropic_errors_leave_in_anthropics_shape(gateway: GatewayProcess) -> None:
    with pytest.raises(anthropic.AuthenticationError) as denied:
        _anthropic(gateway, "sk-wrong").messages.create(
            model="m", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    assert denied.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "incorrect API key provided"},
    }
    with pytest.raises(anthropic.NotFoundError) as missing:
        _anthropic(gateway).messages.create(
            model="nope", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    # a bad request the engine refuses: its own Anthropic-shaped 400 passes through
    raw = httpx.post(
        gateway.url + "/v1/messages",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": KEY},
        timeout=10,
    )
    assert raw.status_code == 400
    assert raw.json()["type"] == "error"
    assert raw.json()["error"]["type"] == "invalid_request_error"
