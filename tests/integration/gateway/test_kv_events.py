"""kv_aware's event index on the fake engine's publisher (vLLM's wire format): stores,
evictions, clears, a late subscriber rebuilt from the replay socket, a sequence gap, an engine
restart, an engine that leaves, two workers that agree; then a gateway routing on it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from orchestra.config import KvAwareConfig
from orchestra.gateway.balancing.kv.feed import KvFeeds, Wanted
from orchestra.gateway.balancing.kv.index import KvIndex
from orchestra.gateway.balancing.kv.wire import seq_bytes
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.protocol import KvEvents
from tests.conftest import GatewayProcess, fast_gateway_section
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)
BLOCK = 16  # the fake engine's block size: a prompt's UTF-8 bytes are its tokens


def kv_engine(name: str, blocks: int = 64) -> tuple[FakeEngineProcess, KvEvents]:
    pub, replay = free_port(), free_port()
    config = {"endpoint": f"tcp://*:{pub}", "replay_endpoint": f"tcp://*:{replay}"}
    engine = FakeEngineProcess(
        "--kv-events-config", json.dumps({"enable_kv_cache_events": True, **config}),
        "--block-size", str(BLOCK), "--num-gpu-blocks-override", str(blocks),
        name=name,
    )  # fmt: skip
    return engine, KvEvents(publisher=f"tcp://127.0.0.1:{pub}", replay=f"tcp://127.0.0.1:{replay}")


def chat(engine: FakeEngineProcess, text: str) -> None:
    body = {"model": engine.name, "max_tokens": 1, "messages": [{"role": "user", "content": text}]}
    engine._call("/v1/chat/completions", body)


def cached(engine: FakeEngineProcess) -> set[int]:
    return set(engine._call("/fake/kv/stats")["cached"])


async def until(check: Callable[[], bool], what: str, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def following(
    wanted: dict[str, Wanted], body: Callable[[list[KvFeeds]], Awaitable[None]], workers: int = 1
) -> None:
    """Run `workers` independent feed sets (each its own index, as each gateway worker has)
    over `wanted` around `body`; stopped whatever happens."""
    feeds = [
        KvFeeds(KvIndex(), lambda: dict(wanted), 0.05, GatewayMetrics().kv_index_blocks)
        for _ in range(workers)
    ]
    tasks = [asyncio.create_task(f.run()) for f in feeds]
    try:
        await body(feeds)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert all(not f.feeds for f in feeds)  # every subscription stopped with its owner


def synced(feeds: KvFeeds, url: str) -> bool:
    entry = feeds.feeds.get(url)
    return entry is not None and entry[1].rebuilds > 0


def indexed(feeds: KvFeeds, url: str) -> float | None:
    """orchestra_kv_index_blocks for `url`, as a scrape would read it."""
    samples = feeds.blocks.collect()[0].samples
    return next((s.value for s in samples if s.labels == {"upstream": url}), None)


def test_the_index_follows_stores_evictions_and_clears() -> None:
    engine, events = kv_engine("kv", blocks=4)
    wanted = {engine.url: Wanted(events, KvAwareConfig())}

    async def body(feeds: list[KvFeeds]) -> None:
        (feed,) = feeds
        index = feed.index
        await until(lambda: synced(feed, engine.url), "the first replay")
        await asyncio.to_thread(chat, engine, "a" * 50)  # "user\na…\n": 56 bytes, 3 blocks
        want = await asyncio.to_thread(cached, engine)
        await until(lambda: index.hashes(engine.url) == want, "the stored blocks")
        assert len(want) == 3 and index.block_size(engine.url) == BLOCK
        await until(lambda: indexed(feed, engine.url) == 3, "orchestra_kv_index_blocks")
        await asyncio.to_thread(chat, engine, "b" * 50)  # 3 more: the engine evicts 2
        want = await asyncio.to_thread(cached, engine)
        await until(lambda: index.hashes(engine.url) == want, "the evictions")
        assert len(want) == 4
        await asyncio.to_thread(engine._call, "/fake/kv/clear", {})
        await until(lambda: index.size(engine.url) == 0, "AllBlocksCleared")

    with engine:
        asyncio.run(following(wanted, body))


def test_late_workers_rebuild_from_the_replay_and_agree() -> None:
    engine, events = kv_engine("kv")
    wanted = {engine.url: Wanted(events, KvAwareConfig())}

    async def body(feeds: list[KvFeeds]) -> None:
        for feed in feeds:
            await until(lambda f=feed: f.index.hashes(engine.url) == cached(engine), "replay")  # type: ignore[misc]
        await asyncio.to_thread(chat, engine, "late " * 30)
        want = await asyncio.to_thread(cached, engine)
        for feed in feeds:
            await until(lambda f=feed: f.index.hashes(engine.url) == want, "live events")  # type: ignore[misc]
        first, second = (f.index.hashes(engine.url) for f in feeds)
        assert first == second == want and len(want) > 8
        # A gap in the sequence (a batch lost) rebuilds from the replay, to the same state.
        feed = feeds[0].feeds[engine.url][1]
        before, last = feed.rebuilds, feed.last
        assert last is not None
        await feed._live([b"", seq_bytes(last + 5), b"\x90"])
        assert feed.rebuilds == before + 1 and feeds[0].index.hashes(engine.url) == want

    with engine:
        for i in range(3):  # cached before anyone subscribes: only the replay has them
            chat(engine, f"early prompt number {i} " * 4)
        assert len(cached(engine)) > 0
        asyncio.run(following(wanted, body, workers=2))


def test_a_restarted_engine_is_rebuilt_and_one_that_leaves_is_dropped() -> None:
    engine, events = kv_engine("kv")
    wanted = {engine.url: Wanted(events, KvAwareConfig())}

    async def body(feeds: list[KvFeeds]) -> None:
        (feed,) = feeds
        index = feed.index
        await until(lambda: synced(feed, engine.url), "the first replay")
        await asyncio.to_thread(chat, engine, "before the restart " * 5)
        await until(lambda: index.size(engine.url) > 0, "the stored blocks")
        old = index.hashes(engine.url)
        await asyncio.to_thread(engine.stop)
        await until(lambda: index.size(engine.url) == 0, "the disconnect")  # its cache died
        await asyncio.to_thread(engine.start)  # a new publisher on the same ports, seq from 0
        await asyncio.to_thread(chat, engine, "after the restart " * 5)
        want = await asyncio.to_thread(cached, engine)
        await until(lambda: index.hashes(engine.url) == want, "the new engine's blocks")
        assert not old & index.hashes(engine.url)
        wanted.clear()  # drained or swapped out: out of the model's upstreams
        await until(lambda: not index.tracks(engine.url), "the engine to leave the index")
        assert indexed(feed, engine.url) == 0  # and the gauge with it

    with engine:
        asyncio.run(following(wanted, body))


# ---- through a gateway ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines() -> Iterator[list[tuple[FakeEngineProcess, KvEvents]]]:
    pairs = [kv_engine("kv", blocks=4096), kv_engine("kv", blocks=4096)]
    with pairs[0][0], pairs[1][0]:
        yield pairs


def test_the_gateway_sends_a_prefix_to_the_engine_that_reports_it_cached(
    engines: list[tuple[FakeEngineProcess, KvEvents]],
) -> None:
    (a, _), (b, _) = engines
    system = "You are the helper of the kv test; answer briefly and in rhyme. " * 12
    # Cached on b behind the gateway's back (another client, or another gateway): only b's
    # events can tell a gateway where it is.
    chat(b, system)
    replicas = [
        {"url": e.url, "kv_events": {"publisher": ev.publisher, "replay": ev.replay}}
        for e, ev in engines
    ]
    config = {
        "gateway": fast_gateway_section(free_port()),
        "servers": [{"name": "kv", "balancing": "kv_aware", "replicas": replicas}],
    }
    with GatewayProcess(config) as gw, httpx.Client(base_url=gw.url, timeout=10) as http:
        deadline = time.monotonic() + 10
        while min(e._call("/fake/kv/stats")["replays"] for e, _ in engines) < 1:
            assert time.monotonic() < deadline, "the gateway never subscribed"
            time.sleep(0.02)
        hits_before = b._call("/fake/kv/stats")["hits"]
        for turn in range(6):
            messages = [{"role": "user", "content": system + f" question {turn}"}]
            reply = http.post("/v1/chat/completions", json={"model": "kv", "messages": messages})
            assert reply.status_code == 200
    chats = [e.stats()["by_path"].get("/v1/chat/completions", 0) for e in (a, b)]
    assert chats == [0, 7], chats  # b: the direct request and all six through the gateway
    assert b._call("/fake/kv/stats")["hits"] > hits_before  # and its cache answered them
