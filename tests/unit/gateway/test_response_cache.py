"""The response cache (gateway/pipeline/cache.py): its key, its memory store's LRU by bytes and
TTL (cache_store.py), and what it does for a call (hit, miss, bypass; no-cache, no-store; scope
per key; a hit's usage counted as cached tokens, its rate limit settled at nothing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from gateway.core.call import SERVED_BY, Call, new_call
from gateway.core.reply import JSON, SSE, IterStream, Reply
from gateway.core.request_key import RequestKey
from gateway.core.sse import DONE, json_frame
from gateway.metrics import GatewayMetrics
from gateway.pipeline.aliases import Target
from gateway.pipeline.cache import HEADER, ResponseCache, cache_key
from gateway.pipeline.cache_sse import Assembler, replay
from gateway.pipeline.cache_store import MemoryStore
from orchestra.config import ApiKey, CacheConfig

TARGET = Target("m", "m")


def _cache(config: CacheConfig, clock: Callable[[], float] = time.monotonic) -> ResponseCache:
    store = MemoryStore(config.max_bytes, config.max_entry_bytes, clock)
    return ResponseCache(config, GatewayMetrics(), store)


def _held(cache: ResponseCache) -> int:
    assert isinstance(cache.store, MemoryStore)
    return len(cache.store)


def _call(
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    key: str | None = None,
    raw: bytes | None = None,
) -> Call:
    body = orjson.dumps(payload) if raw is None else raw
    raw_headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    call = new_call(
        "/v1/chat/completions",
        body,
        payload,
        "m",
        request_id="r",
        stream=bool(payload.get("stream")),
        api_key=ApiKey(name=key, sha256="0" * 64) if key else None,
        raw_headers=raw_headers,
    )
    assert call.route_key == RequestKey(payload, raw_headers)
    return call


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_key_ignores_order_whitespace_model_and_stream() -> None:
    a = _call(CHAT)
    reordered = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "x"}
    spaced = b'{ "model" : "m",\n "messages": [ {"role":"user","content":"hi"} ], "temperature":0}'
    b = _call(reordered)
    c = _call(orjson.loads(spaced), raw=spaced)
    d = _call({**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    keys = {cache_key(x, "m", None) for x in (a, b, c, d)}
    assert len(keys) == 1
    # What the answer depends on splits it: the body, the model served, the scope.
    assert cache_key(_call({**CHAT, "max_tokens": 5}), "m", None) not in keys
    assert cache_key(a, "adapter-1", None) not in keys
    assert cache_key(a, "m", "team-a") not in keys


def test_lru_is_bounded_by_bytes() -> None:
    store = MemoryStore(max_bytes=10, max_entry_bytes=100)
    store.put("a", b"aaaa", "m", 60)
    store.put("b", b"bbbb", "m", 60)
    assert store.lookup("a") is not None  # a is now the most recent: b goes first
    store.put("c", b"cccc", "m", 60)
    assert store.lookup("b") is None
    assert store.lookup("a") is not None and store.lookup("c") is not None
    assert store.bounded().size == 8 and store.bounded().within
    store.put("big", b"x" * 11, "m", 60)  # larger than the whole store: not kept, nothing lost
    assert store.lookup("big") is None and len(store) == 2
    store.put("a", b"a" * 6, "m", 60)  # replaced: its old bytes leave the count
    assert store.bounded().size == 10 and len(store) == 2
    small = MemoryStore(max_bytes=100, max_entry_bytes=5)
    small.put("a", b"x" * 6, "m", 60)  # past max_entry_bytes: never stored
    small.put("b", b"x" * 5, "m", 60)
    assert small.lookup("a") is None and small.lookup("b") is not None


def test_ttl() -> None:
    now = [100.0]
    store = MemoryStore(1000, 1000, clock=lambda: now[0])
    store.put("a", b"x", "m", 5)
    now[0] = 104.9
    assert store.lookup("a") is not None
    now[0] = 105.0
    assert store.lookup("a") is None
    assert store.bounded().size == 0  # an expired entry read is dropped


class Engine:
    """`produce` for the cache: counts its calls, answers JSON naming `served`."""

    def __init__(self, served: str = "m", status: int = 200) -> None:
        self.calls = 0
        self.served = served
        self.status = status

    async def __call__(self) -> Reply:
        self.calls += 1
        body = orjson.dumps({"id": f"c{self.calls}", "choices": []})
        return Reply(body, self.status, {SERVED_BY: self.served}, JSON)


def _serve(cache: ResponseCache, call: Call, engine: Engine) -> Reply:
    return asyncio.run(cache.serve(call, TARGET, engine))


def _header(call: Call, reply: Reply) -> str | None:
    return reply.headers.get(HEADER) or call.reply_headers.get(HEADER)


def _ask(cache: ResponseCache, engine: Engine, call: Call) -> str | None:
    """What the cache said for `call`."""
    return _header(call, _serve(cache, call, engine))


def test_hit_miss_bypass() -> None:
    metrics = GatewayMetrics()
    store = MemoryStore(1000, 1000)
    cache = ResponseCache(CacheConfig(enabled=True), metrics, store)
    engine = Engine()
    first, second = _call(CHAT), _call(CHAT)
    miss = _serve(cache, first, engine)
    hit = _serve(cache, second, engine)
    assert _header(first, miss) == "miss" and _header(second, hit) == "hit"
    assert hit.body == miss.body and engine.calls == 1
    assert hit.headers[SERVED_BY] == "m"
    assert float(hit.headers["x-orchestra-overhead-ms"]) >= 0  # stamped as the proxy does
    sampled = _call({**CHAT, "temperature": 0.7})  # not deterministic: never cached
    assert _ask(cache, engine, sampled) == "bypass"
    assert engine.calls == 2
    seeded = {**CHAT, "temperature": 0.7, "seed": 3}
    _serve(cache, _call(seeded), engine)
    assert _ask(cache, engine, _call(seeded)) == "hit"
    asked = {**CHAT, "temperature": 1}
    _serve(cache, _call(asked, {HEADER: "use"}), engine)
    assert _ask(cache, engine, _call(asked, {HEADER: "use"})) == "hit"
    counted = {
        result: metrics.registry.get_sample_value(
            "orchestra_response_cache_total", {"model": "m", "result": result}
        )
        for result in ("hit", "miss", "bypass")
    }
    assert counted == {"hit": 3, "miss": 3, "bypass": 1}


def test_no_cache_and_no_store() -> None:
    cache = _cache(CacheConfig(enabled=True))
    engine = Engine()
    no_store = _call(CHAT, {"cache-control": "no-store"})
    assert _ask(cache, engine, no_store) == "bypass"
    assert _held(cache) == 0
    no_cache = _call(CHAT, {"cache-control": "no-cache"})
    assert _ask(cache, engine, no_cache) == "miss"
    assert _held(cache) == 1  # written
    again = _call(CHAT, {"cache-control": "no-cache"})
    assert _ask(cache, engine, again) == "miss"  # never read
    assert engine.calls == 3
    assert _ask(cache, engine, _call(CHAT)) == "hit"


def test_scoped_per_key_unless_shared() -> None:
    cache = _cache(CacheConfig(enabled=True))
    engine = Engine()
    _serve(cache, _call(CHAT, key="a"), engine)
    assert _ask(cache, engine, _call(CHAT, key="b")) == "miss"
    assert _ask(cache, engine, _call(CHAT, key="a")) == "hit"
    shared = _cache(CacheConfig(enabled=True, shared=True))
    _serve(shared, _call(CHAT, key="a"), engine)
    assert _ask(shared, engine, _call(CHAT, key="b")) == "hit"


def test_errors_and_fallbacks_are_not_stored() -> None:
    cache = _cache(CacheConfig(enabled=True))
    _serve(cache, _call(CHAT), Engine(status=500))
    _serve(cache, _call(CHAT), Engine(status=400))
    _serve(cache, _call(CHAT), Engine(served="other"))  # a fallback answered: not m's answer
    assert _held(cache) == 0


def test_ttl_per_model() -> None:
    now = [0.0]
    config = CacheConfig(enabled=True, ttl_s=100, model_ttl_s={"m": 1})
    cache = _cache(config, clock=lambda: now[0])
    engine = Engine()
    _serve(cache, _call(CHAT), engine)
    now[0] = 2.0
    assert _ask(cache, engine, _call(CHAT)) == "miss"
    assert engine.calls == 2


def _sse(*events: dict[str, Any]) -> list[bytes]:
    return [json_frame(event) for event in events]


CHUNKS = _sse(
    {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "a "}, "finish_reason": None}
        ],
    },
    {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}],
    },
    {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    },
)


def test_stream_assembled_and_replayed() -> None:
    assembler = Assembler()
    for chunk in CHUNKS:
        assembler.feed(chunk)
    assert assembler.answer() is None  # no [DONE] yet: a cut stream is never stored
    assembler.feed(DONE[:5])
    assembler.feed(DONE[5:])
    answer = assembler.answer()
    assert answer is not None
    whole = orjson.loads(answer)
    assert whole["object"] == "chat.completion" and whole["usage"]["total_tokens"] == 3
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "a b"}
    assert whole["choices"][0]["finish_reason"] == "stop"
    replayed = replay(answer, include_usage=True)
    assert replayed is not None and replayed.endswith(DONE)
    again = Assembler()  # the replay says what the stream said
    again.feed(replayed)
    assert again.answer() == answer
    assert b"usage" not in (replay(answer, include_usage=False) or b"usage")


def test_stream_without_usage_or_with_error_is_not_stored() -> None:
    no_usage = Assembler()
    for chunk in [*CHUNKS[:2], DONE]:
        no_usage.feed(chunk)
    assert no_usage.answer() is None
    failed = Assembler()
    for chunk in [*CHUNKS[:2], json_frame({"error": {"message": "cut"}}), DONE]:
        failed.feed(chunk)
    assert failed.answer() is None


class StreamEngine(Engine):
    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self.chunks = chunks

    async def __call__(self) -> Reply:
        self.calls += 1

        async def body() -> AsyncIterator[bytes]:
            for chunk in self.chunks:
                yield chunk

        return Reply(IterStream(body()), 200, {SERVED_BY: "m"}, SSE)


def test_stream_miss_stores_then_both_kinds_hit() -> None:
    cache = _cache(CacheConfig(enabled=True))
    engine = StreamEngine([*CHUNKS, DONE])
    streamed = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    miss = _serve(cache, _call(streamed), engine)
    assert _held(cache) == 0  # stored only once read to its end
    assert asyncio.run(miss.read()).endswith(DONE)
    assert _held(cache) == 1
    hit = _serve(cache, call := _call(streamed), engine)
    assert _header(call, hit) == "hit" and hit.headers["content-type"].startswith(SSE)
    plain = _serve(cache, call := _call(CHAT), engine)
    assert _header(call, plain) == "hit"
    assert orjson.loads(plain.body)["choices"][0]["message"]["content"] == "a b"  # type: ignore[arg-type]
    assert engine.calls == 1
    cut = _cache(CacheConfig(enabled=True))
    asyncio.run(_serve(cut, _call(streamed), StreamEngine(CHUNKS)).read())  # no [DONE]
    assert _held(cut) == 0


def test_ensemble_members_pass_by() -> None:
    cache = _cache(CacheConfig(enabled=True))
    engine = Engine()
    for _ in range(2):
        member = _call(CHAT).derive(cached=False)  # as ensemble_parts.member_call makes it
        assert _ask(cache, engine, member) is None  # the ensemble's own call has the header
    assert _held(cache) == 0 and engine.calls == 2
