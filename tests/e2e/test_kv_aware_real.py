"""kv_aware on two real SmolLM2 engines launched by the supervisor with KV events on: the
gateway's block hashes of a request equal the ones the engine publishes, and a long prefix
cached on one engine behind the gateway's back is routed there (its own hit counter rises)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zmq
import zmq.asyncio

from orchestra.gateway.balancing.kv.hashing import block_hashes
from orchestra.gateway.balancing.kv.wire import BlockStored, decode_batch
from tests.conftest import scrape_total
from tests.e2e.conftest import Stack, two_replica_config, two_replica_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
NAME = "smollm2"
SYSTEM = "You are a patient librarian who answers questions about old maps. " * 60  # ~740 tokens


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("kv")
    with two_replica_stack(two_replica_config(tmp, NAME, balancing="kv_aware"), NAME, tmp) as s:
        yield s


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
    with httpx.Client(base_url=stack.gateway.url, timeout=120) as http:
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
