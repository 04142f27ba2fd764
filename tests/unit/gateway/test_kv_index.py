"""kv_aware's pure parts: the wire format, vLLM's block-hash chain, the index's bounds and
events, the /tokenize body and the policy's choice (longest cached prefix, load gate,
prefix_aware fallback)."""

from __future__ import annotations

import asyncio

from orchestra.config import AffinityConfig, KvAwareConfig
from orchestra.gateway.balancing.kv.hashing import block_hashes
from orchestra.gateway.balancing.kv.index import KvIndex
from orchestra.gateway.balancing.kv.policy import KvAware
from orchestra.gateway.balancing.kv.tokens import Tokenizer, tokenize_body
from orchestra.gateway.balancing.kv.wire import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEventBatch,
    as_int,
    decode_batch,
    encode_batch,
)
from orchestra.gateway.balancing.policy import prepared_key
from orchestra.gateway.balancing.replica import Replica
from orchestra.gateway.core.request_key import RequestKey
from orchestra.protocol import KvEvents
from orchestra.runtime import Bounded

SEED = "vllm-none-hash"
EVENTS = KvEvents(publisher="tcp://127.0.0.1:1")


def test_a_batch_round_trips_and_bytes_hashes_read_as_vllms_ints() -> None:
    digest = bytes(range(32))
    batch = KvEventBatch(
        1.5, [BlockStored([7, digest], None, [1, 2], 16), BlockRemoved([7]), AllBlocksCleared()]
    )
    read = decode_batch(encode_batch(batch))
    assert [type(e).__name__ for e in read.events] == [
        "BlockStored", "BlockRemoved", "AllBlocksCleared",
    ]  # fmt: skip
    stored = read.events[0]
    assert isinstance(stored, BlockStored) and stored.block_size == 16
    assert as_int(digest) == int.from_bytes(digest[-8:], "big")  # the low 64 bits


def test_the_chain_names_whole_prefixes_and_skips_a_partial_block() -> None:
    tokens = list(range(40))
    chain = block_hashes(tokens, 16, SEED, 100)
    assert len(chain) == 2  # 40 tokens: two full blocks of 16
    assert block_hashes(tokens[:32] + [999] * 16, 16, SEED, 100)[:2] == chain
    assert block_hashes([5, *tokens[1:]], 16, SEED, 100)[1] != chain[1]  # depends on block 0
    assert block_hashes(tokens, 16, "42", 100) != chain  # the seed (PYTHONHASHSEED) matters
    assert block_hashes(tokens, 16, SEED, 1) == chain[:1]


def test_the_index_follows_stores_removals_and_clears_within_its_cap() -> None:
    index = KvIndex()
    index.track("a", cap=3)
    index.apply("a", KvEventBatch(0.0, [BlockStored([1, 2], None, [], 16)]))
    assert index.match("a", [1, 2, 3]) == 2 and index.block_size("a") == 16
    index.apply("a", KvEventBatch(0.0, [BlockRemoved([2])]))
    assert index.match("a", [1, 2]) == 1
    index.store("a", [3, 4, 5], 16)  # over the cap of 3: the oldest (1) goes
    assert index.hashes("a") == {3, 4, 5}
    assert index.bounded() == Bounded(3, 3)  # what GET /admin/runtime reports
    index.apply("a", KvEventBatch(0.0, [AllBlocksCleared()]))
    assert index.size("a") == 0 and index.tracks("a")
    index.store("untracked", [1], 16)  # an engine nobody follows is never stored
    assert not index.tracks("untracked")
    index.drop("a")
    assert not index.tracks("a") and index.block_size("a") is None


def test_the_tokenize_body_matches_the_request_kind() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [1]}
    assert tokenize_body(chat) == {
        "model": "m",
        "messages": chat["messages"],
        "add_generation_prompt": True,
        "tools": [1],
    }
    assert tokenize_body({"model": "m", "prompt": "abc"}) == {"model": "m", "prompt": "abc"}
    assert tokenize_body({"model": "m", "prompt": [3, 4]}) == [3, 4]  # already tokens
    assert tokenize_body({"model": "m", "prompt": ["a", "b"]}) is None  # a batch


class _NoCalls(Tokenizer):
    def __init__(self) -> None:
        pass


def _policy(index: KvIndex, gate: float = 8.0) -> KvAware:
    return KvAware(KvAwareConfig(load_gate=gate), AffinityConfig(), index, _NoCalls())


def _replicas(index: KvIndex, n: int = 2) -> list[Replica]:
    replicas = [Replica(url=f"http://e{i}", kv_events=EVENTS) for i in range(n)]
    for r in replicas:
        index.track(r.url, cap=100)
    return replicas


def test_the_engine_holding_the_longest_prefix_wins_unless_overloaded() -> None:
    index = KvIndex()
    a, b = _replicas(index)
    tokens = tuple(range(64))
    chain = block_hashes(tokens, 16, SEED, 100)
    index.store(a.url, chain[:1], 16)
    index.store(b.url, chain[:3], 16)
    policy = _policy(index, gate=2)
    key = RequestKey({}, tokens=tokens)
    assert policy.pick([a, b], key) is b
    b.outstanding = 3  # load 3 vs 0: over the gate of 2 -> the least loaded
    assert policy.pick([a, b], key) is a
    b.outstanding = 2  # exactly at the gate: still the cache
    assert policy.pick([a, b], key) is b


def test_without_tokens_or_matches_prefix_aware_decides_and_remembers() -> None:
    index = KvIndex()
    a, b = _replicas(index)
    policy = _policy(index)
    body = {"messages": [{"role": "system", "content": "x" * 1000}]}
    first = policy.pick([a, b], RequestKey(body))  # no tokens: prefix_aware's choice
    assert all(policy.pick([a, b], RequestKey(body)) is first for _ in range(5))
    unknown = RequestKey(body, tokens=tuple(range(64)))  # tokens, but no engine holds them
    assert policy.pick([a, b], unknown) is first  # the fallback's table keeps the burst


def test_prepare_asks_only_when_events_are_followed() -> None:
    index = KvIndex()
    a, b = Replica(url="http://a"), Replica(url="http://b")  # no events known

    class Counting(Tokenizer):
        calls = 0

        def __init__(self) -> None:
            pass

        async def tokens(self, replica: Replica, payload: object, timeout_s: float) -> list[int]:
            Counting.calls += 1
            return [1, 2, 3]

    policy = KvAware(KvAwareConfig(), AffinityConfig(), index, Counting())
    key = RequestKey({"prompt": "hi"})
    assert asyncio.run(prepared_key(policy, [a, b], key)) is key and Counting.calls == 0
    a.kv_events = b.kv_events = EVENTS
    index.track(a.url, 10)
    prepared = asyncio.run(prepared_key(policy, [a, b], key))
    assert prepared.tokens == (1, 2, 3) and Counting.calls == 1
    assert asyncio.run(prepared_key(policy, [a], key)) is key  # one candidate: nothing to pick
