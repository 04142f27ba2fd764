"""Two replicas of SmolLM2 on the real vLLM CPU engine behind a gateway with an API key and
kv_aware balancing (KV events on), one stack for the module (each real engine start costs about
a minute on two cores):

- the Responses API and Anthropic's Messages API through the gateway, with the official SDKs
  (stored responses live in the memory of the engine that made them,
  `VLLM_ENABLE_RESPONSES_API_STORE=1`);
- kv_aware: the gateway's block hashes of a request equal the ones the engine publishes, and a
  long prefix cached on one engine behind the gateway's back is routed there (its own hit
  counter rises).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import zmq
import zmq.asyncio

from orchestra.gateway.balancing.kv.hashing import block_hashes
from orchestra.gateway.balancing.kv.wire import BlockStored, decode_batch
from orchestra.gateway.protection.keys import hash_key
from tests.conftest import scrape_total
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
SYSTEM = "You are a patient librarian who answers questions about old maps. " * 60  # ~740 tokens


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("apis")
    config = two_replica_config(tmp, NAME, balancing="kv_aware")
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


def _metric(url: str, name: str) -> float:
    return scrape_total(url, name, timeout=30)


def _chat(messages: list[dict[str, str]]) -> dict[str, object]:
    return {"model": NAME, "messages": messages, "max_tokens": 1, "temperature": 0}


def _cache_directly(url: str, publisher: str, messages: list[dict[str, str]]) -> list[BlockStored]:
    """Send a chat straight to one engine (behind the gateway's back) and return the
    BlockStored events it published for it; once we have them, so has every subscriber."""

    async def run() -> list[BlockStored]:
        ctx = zmq.asyncio.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(publisher)
        try:
            async with httpx.AsyncClient(timeout=120) as http:
                await asyncio.sleep(0.5)  # the subscription reaches the publisher
                reply = await http.post(url + "/v1/chat/completions", json=_chat(messages))
                assert reply.status_code == 200
            found: list[BlockStored] = []
            async with asyncio.timeout(30):
                while not found:
                    batch = decode_batch((await sub.recv_multipart())[2])
                    found = [e for e in batch.events if isinstance(e, BlockStored)]
            return found
        finally:
            ctx.destroy(linger=0)

    return asyncio.run(run())


def test_the_gateways_block_hashes_equal_the_engines_own(stack: Stack) -> None:
    entry = stack.model(NAME)
    url = entry["upstreams"][0]
    events = entry["kv_events"][url]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hashes?"}]
    published = _cache_directly(url, events["publisher"], messages)
    tokenized = httpx.post(
        url + "/tokenize",
        json={"model": NAME, "messages": messages, "add_generation_prompt": True},
        timeout=60,
    ).json()["tokens"]
    theirs = [h for e in published for h in e.block_hashes]
    size = published[0].block_size
    ours = block_hashes(tokenized, size, events["hash_seed"], 10_000)
    assert len(ours) == len(tokenized) // size >= 5
    assert ours == theirs  # every full block of the prompt, in order, hash for hash


def test_a_long_prefix_goes_to_the_engine_that_cached_it(stack: Stack) -> None:
    entry = stack.model(NAME)
    engines = list(entry["upstreams"])
    holder, other = engines[1], engines[0]
    system = SYSTEM.replace("old maps", "tide tables")  # not cached anywhere yet
    # Cached on `holder` directly: only its KV events can tell the gateway.
    first = [{"role": "system", "content": system}, {"role": "user", "content": "Hello."}]
    assert _cache_directly(holder, entry["kv_events"][holder]["publisher"], first)
    hits = {u: _metric(u, "vllm:prefix_cache_hits_total") for u in engines}
    prompts = {u: _metric(u, "vllm:prompt_tokens_total") for u in engines}
    auth = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=stack.gateway.url, headers=auth, timeout=120) as http:
        for turn in range(3):
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": f"Question number {turn}?"},
            ]
            reply = http.post("/v1/chat/completions", json=_chat(messages))
            assert reply.status_code == 200
            assert reply.headers["x-orchestra-replica"] == holder.removeprefix("http://")
    gained = {u: _metric(u, "vllm:prefix_cache_hits_total") - hits[u] for u in engines}
    assert _metric(other, "vllm:prompt_tokens_total") == prompts[other]  # nothing went there
    assert gained[holder] >= 3 * 5 * 128, gained  # each hit the cached system prompt's blocks
