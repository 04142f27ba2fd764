"""The Responses API and Anthropic's Messages API on the real vLLM CPU engine, through the
gateway, with the official SDKs: two replicas of SmolLM2 (stored responses live in the memory
of the engine that made them, `VLLM_ENABLE_RESPONSES_API_STORE=1`), the gateway with an API key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from orchestra.gateway.protection.keys import hash_key
from tests.e2e.conftest import (
    START_TIMEOUT_S,
    Stack,
    record_figure,
    two_replica_config,
    two_replica_stack,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
NAME, KEY = "smollm2", "sk-e2e-apis"
QUESTION = "What is the capital of France?"  # greedy: "The capital of France is Paris."
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("apis")
    config = two_replica_config(tmp, NAME)
    config["engine"]["env"] = {**config["engine"]["env"], "VLLM_ENABLE_RESPONSES_API_STORE": "1"}
    config["gateway"]["api_keys"] = [{"name": "e2e", "sha256": hash_key(KEY)}]
    with two_replica_stack(config, NAME, tmp) as running:
        yield running


def _openai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack.gateway.url + "/v1", api_key=KEY, timeout=START_TIMEOUT_S, max_retries=0
    )


def _engines(stack: Stack) -> list[str]:
    upstreams = list(stack.model(NAME)["upstreams"])
    assert len(upstreams) == 2
    return upstreams


def _holders(stack: Stack, response_id: str) -> list[str]:
    return [
        url
        for url in _engines(stack)
        if httpx.get(f"{url}/v1/responses/{response_id}", timeout=30).status_code == 200
    ]


def test_responses_create_stream_retrieve_and_a_conversation_across_two_replicas(
    stack: Stack,
) -> None:
    client = _openai(stack)
    first = client.responses.create(model=NAME, input=QUESTION, max_output_tokens=16, temperature=0)
    assert "Paris" in first.output_text, first.output_text
    holders = _holders(stack, first.id)
    assert len(holders) == 1  # one engine stored it, the other does not know it
    previous, replies = first.id, []
    for turn in ("And of Italy?", "And of Spain?", "Thanks."):
        reply = client.responses.create(
            model=NAME, input=turn, previous_response_id=previous, max_output_tokens=16
        )
        assert reply.previous_response_id == previous
        replies.append(reply)
        previous = reply.id
    # every turn was stored by the same engine: the conversation never left it
    assert all(_holders(stack, r.id) == holders for r in replies)
    assert client.responses.retrieve(first.id).output_text == first.output_text
    with client.responses.stream(
        model=NAME, input=QUESTION, max_output_tokens=16, temperature=0
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert "Paris" in final.output_text
    assert len(_holders(stack, final.id)) == 1
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nobodyhasthis")
    record_figure("responses_conversation_turns_on_one_engine", len(replies) + 1)


def test_anthropic_messages_reply_stream_bad_request_and_wrong_key(stack: Stack) -> None:
    client = anthropic.Anthropic(
        base_url=stack.gateway.url, api_key=KEY, timeout=START_TIMEOUT_S, max_retries=0
    )
    message = client.messages.create(
        model=NAME,
        max_tokens=16,
        messages=[{"role": "user", "content": QUESTION}],
        extra_body=GREEDY,  # the anthropic SDK 2.x has no `temperature` argument
    )
    assert message.type == "message" and message.content[0].type == "text"
    assert "Paris" in message.content[0].text, message.content
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    with client.messages.stream(
        model=NAME,
        max_tokens=16,
        messages=[{"role": "user", "content": QUESTION}],
        extra_body=GREEDY,  # the anthropic SDK 2.x has no `temperature` argument
    ) as stream:
        text = "".join(stream.text_stream)
    assert "Paris" in text
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=NAME, max_tokens=-1, messages=[])  # the engine refuses
    assert bad.value.body["type"] == "error"  # type: ignore[index]
    wrong = anthropic.Anthropic(base_url=stack.gateway.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        wrong.messages.create(
            model=NAME, max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
