"""The response cache through a real gateway, read with the official `openai` SDK: a hit parses
equal to the miss that stored it and never reaches the engine (its request count says so), keys
do not see each other's entries, `no-cache` and `no-store` are honoured. Each test runs on both
stores: this worker's memory, and a real Redis (Debian's `redis-server`, started by the tests)
that two workers share."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest
import redis

from orchestra.gateway.pipeline.cache_redis import PREFIX
from orchestra.gateway.protection.keys import hash_key
from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess, free_port
from tests.integration.gateway.test_redis_limits import redis_url

pytestmark = pytest.mark.timeout(120)

__all__ = ["redis_url"]  # the fixture, from the rate limits' test: one way to start Redis

KEYS = {"a": "sk-cache-a", "b": "sk-cache-b"}
MESSAGES = [{"role": "user", "content": "hello there friend"}]


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess(name="m1") as fake:
        yield fake


@pytest.fixture(scope="module", params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> redis.Redis | None:
    """None: the memory store; else a client of the Redis the gateway's cache is in."""
    if request.param == "memory":
        return None
    return redis.Redis.from_url(request.getfixturevalue("redis_url"), socket_timeout=5)


@pytest.fixture(scope="module")
def gateway(engine: FakeEngineProcess, store: redis.Redis | None) -> Iterator[GatewayProcess]:
    keys = [{"name": name, "sha256": hash_key(secret)} for name, secret in KEYS.items()]
    on_redis = {} if store is None else {"workers": 2, "redis_url": _url(store)}
    section = fast_gateway_section(free_port(), api_keys=keys, **on_redis)
    section["cache"] = {"enabled": True, "max_bytes": 1_000_000, "ttl_s": 600}
    config = {
        "gateway": section,
        "servers": [{"name": "m1", "url": engine.url}],
        "batch": {"enabled": False},  # several workers: no batch store
    }
    gw = GatewayProcess(config)
    gw.start_timeout = 90.0  # two workers on a busy machine
    with gw:
        if store is not None:
            gw.wait_workers(2)
        yield gw


def _url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


@pytest.fixture
def stored(store: redis.Redis | None) -> Callable[[int], None]:
    """Waits until `n` answers are stored: at once in memory; Redis's writes are made off the
    request path, so a hit asked right after its miss could come before them."""

    def wait(n: int) -> None:
        if store is not None:
            count = lambda: len(list(store.scan_iter(match=PREFIX + "*")))  # noqa: E731
            wait_until(lambda: count() >= n, what=f"{n} answers stored in Redis")

    return wait


@pytest.fixture(autouse=True)
def _clean(
    engine: FakeEngineProcess, gateway: GatewayProcess, store: redis.Redis | None
) -> Iterator[None]:
    reset_engine(engine)
    if store is not None:
        store.flushdb()  # each test counts its own entries
    yield
    gateway.wait_ready("m1")


def _client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS[key], max_retries=0, timeout=10)


def _ask(sdk: openai.OpenAI, content: str, **extra: object) -> tuple[str, dict[str, object]]:
    """The cache's header and the SDK's parsed answer."""
    raw = sdk.chat.completions.with_raw_response.create(
        model="m1",
        messages=[{"role": "user", "content": content}],
        max_tokens=3,
        temperature=0,
        **extra,  # type: ignore[arg-type]
    )
    return raw.headers["x-orchestra-cache"], raw.parse().model_dump()


def test_hit_equals_miss_and_skips_the_engine(
    gateway: GatewayProcess, engine: FakeEngineProcess, stored: Callable[[int], None]
) -> None:
    with _client(gateway, "a") as sdk:
        said, miss = _ask(sdk, "hit equals miss")
        assert said == "miss"
        assert engine.stats()["requests_total"] == 1
        stored(1)
        said, hit = _ask(sdk, "hit equals miss")
        assert said == "hit"
        assert hit == miss  # the id and the usage included
        assert engine.stats()["requests_total"] == 1  # the hit never reached it
        sampled = sdk.chat.completions.with_raw_response.create(
            model="m1", messages=MESSAGES, max_tokens=3, temperature=0.8
        )
        assert sampled.headers["x-orchestra-cache"] == "bypass"


def test_keys_are_isolated(
    gateway: GatewayProcess, engine: FakeEngineProcess, stored: Callable[[int], None]
) -> None:
    with _client(gateway, "a") as a, _client(gateway, "b") as b:
        assert _ask(a, "isolated")[0] == "miss"
        stored(1)
        assert _ask(b, "isolated")[0] == "miss"  # a's entry is not b's
        stored(2)
        assert _ask(b, "isolated")[0] == "hit"
        assert engine.stats()["requests_total"] == 2


def test_no_cache_and_no_store(
    gateway: GatewayProcess, engine: FakeEngineProcess, stored: Callable[[int], None]
) -> None:
    with _client(gateway, "a") as sdk:
        no_store = {"extra_headers": {"cache-control": "no-store"}}
        assert _ask(sdk, "control", **no_store)[0] == "bypass"
        assert _ask(sdk, "control")[0] == "miss"  # no-store stored nothing
        stored(1)
        no_cache = {"extra_headers": {"cache-control": "no-cache"}}
        assert _ask(sdk, "control", **no_cache)[0] == "miss"  # not read, though there
        assert engine.stats()["requests_total"] == 3
        assert _ask(sdk, "control")[0] == "hit"
        assert engine.stats()["requests_total"] == 3


def _streamed(sdk: openai.OpenAI, content: str) -> tuple[str, str, str | None, object]:
    """A streamed call as the SDK reads it: the cache's header, the text, the finish reason
    and the usage."""
    with sdk.chat.completions.with_streaming_response.create(
        model="m1",
        messages=[{"role": "user", "content": content}],
        max_tokens=3,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        said = raw.headers["x-orchestra-cache"]
        text, finish, usage = "", None, None
        for chunk in raw.parse():
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
    return said, text, finish, usage


def test_streams_store_and_replay(
    gateway: GatewayProcess, engine: FakeEngineProcess, stored: Callable[[int], None]
) -> None:
    with _client(gateway, "a") as sdk:
        said, *miss = _streamed(sdk, "streamed")
        assert said == "miss" and miss[0] and miss[2] is not None
        stored(1)
        said, *hit = _streamed(sdk, "streamed")
        assert said == "hit"
        assert hit == miss  # text, finish reason, usage
        said, plain = _ask(sdk, "streamed")  # the stream's answer, as JSON
        assert said == "hit"
        assert plain["choices"][0]["message"]["content"] == miss[0]
        assert plain["usage"] == miss[2].model_dump()  # type: ignore[attr-defined]
        assert engine.stats()["requests_total"] == 1
        said, plain = _ask(sdk, "plain first")  # a plain answer, replayed as a stream
        stored(2)
        said, *replayed = _streamed(sdk, "plain first")
        assert said == "hit" and replayed[0] == plain["choices"][0]["message"]["content"]
        assert engine.stats()["requests_total"] == 2
