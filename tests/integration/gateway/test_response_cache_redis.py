"""The response cache in a real Redis (Debian's `redis-server`, started by the tests) shared by
two gateway processes: an answer one stored is a hit on the other, each entry expires after its
model's TTL (Redis's own expiry), keys stay isolated across gateways, and a Redis that cannot be
reached makes every call a miss, never an error; a hit lands in each gateway's ledger as cached
tokens. (The SDK's hit-equals-miss, stream and not,
runs on Redis in test_response_cache.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from orchestra.gateway.pipeline.cache_redis import PREFIX
from orchestra.gateway.protection.keys import hash_key
from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess, free_port
from tests.integration.gateway.test_redis_limits import redis_url

pytestmark = pytest.mark.timeout(120)

__all__ = ["redis_url"]  # the fixture, from the rate limits' test: one way to start Redis

KEYS = {"a": "sk-cache-a", "b": "sk-cache-b", "c": "sk-cache-c"}  # c: the ledger's test only
SHORT_TTL_S = 2  # the model `short`'s own ttl (model_ttl_s); the others have TTL_S
TTL_S = 600


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess("--served-model-name", "m1", "short", name="m1") as fake:
        yield fake


def _gateway(engine: FakeEngineProcess, url: str) -> GatewayProcess:
    keys = [{"name": name, "sha256": hash_key(secret)} for name, secret in KEYS.items()]
    section = fast_gateway_section(free_port(), api_keys=keys, redis_url=url)
    section["cache"] = {"enabled": True, "ttl_s": TTL_S, "model_ttl_s": {"short": SHORT_TTL_S}}
    servers = [{"name": "m1", "url": engine.url}, {"name": "short", "url": engine.url}]
    return GatewayProcess({"gateway": section, "servers": servers})


@pytest.fixture(scope="module")
def pair(
    engine: FakeEngineProcess, redis_url: str
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateways on one Redis."""
    with _gateway(engine, redis_url) as one, _gateway(engine, redis_url) as other:
        yield one, other


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean(engine: FakeEngineProcess, store: redis.Redis) -> None:
    reset_engine(engine)
    store.flushdb()


def _entries(store: redis.Redis) -> list[bytes]:
    return list(store.scan_iter(match=PREFIX + "*"))


def _stored(store: redis.Redis, n: int) -> None:
    """Redis's writes are made off the request path: wait for them."""
    wait_until(lambda: len(_entries(store)) >= n, what=f"{n} answers stored in Redis")


def _ask(gw: GatewayProcess, content: str, key: str = "a", model: str = "m1") -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 3,
        "temperature": 0,
    }
    headers = {"authorization": f"Bearer {KEYS[key]}"}
    reply = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply


def test_a_miss_on_one_gateway_is_a_hit_on_the_other(
    pair: tuple[GatewayProcess, GatewayProcess], engine: FakeEngineProcess, store: redis.Redis
) -> None:
    one, other = pair
    miss = _ask(one, "shared by gateways", key="c")
    assert miss.headers["x-orchestra-cache"] == "miss"
    _stored(store, 1)
    hit = _ask(other, "shared by gateways", key="c")
    assert hit.headers["x-orchestra-cache"] == "hit"
    assert hit.headers["x-orchestra-served-by"] == "m1"
    assert hit.json() == miss.json()
    assert engine.stats()["requests_total"] == 1
    assert _ask(one, "shared by gateways", key="c").headers["x-orchestra-cache"] == "hit"
    assert engine.stats()["requests_total"] == 1
    # Each gateway's ledger: a hit's tokens are cached tokens, not new ones, at no cost.
    usage = miss.json()["usage"]
    assert _totals(other) == (1, 0, 0, usage["total_tokens"])
    assert _totals(one) == (
        2,
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )


def _totals(gw: GatewayProcess) -> tuple[int, int, int, int]:
    """Key `c`'s requests, prompt, completion and cached tokens on `m1` in `gw`'s ledger
    (`/admin/usage` from loopback: no admin key configured)."""
    reply = httpx.get(gw.url + "/admin/usage", timeout=10)
    assert reply.status_code == 200, reply.text
    (row,) = [t for t in reply.json()["totals"] if (t["key"], t["model"]) == ("c", "m1")]
    names = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens")
    requests, prompt, completion, cached = (int(row[name]) for name in names)
    return requests, prompt, completion, cached


def test_keys_are_isolated_across_gateways(
    pair: tuple[GatewayProcess, GatewayProcess], store: redis.Redis
) -> None:
    one, other = pair
    assert _ask(one, "isolated", key="a").headers["x-orchestra-cache"] == "miss"
    _stored(store, 1)
    assert _ask(other, "isolated", key="b").headers["x-orchestra-cache"] == "miss"
    _stored(store, 2)  # one entry per key
    assert _ask(one, "isolated", key="b").headers["x-orchestra-cache"] == "hit"


def test_each_entry_expires_after_its_models_ttl(
    pair: tuple[GatewayProcess, GatewayProcess], store: redis.Redis
) -> None:
    one, other = pair
    _ask(one, "ttl", model="m1")
    _ask(one, "ttl", model="short")
    _stored(store, 2)
    ttls = sorted(store.pttl(key) for key in _entries(store))
    assert 0 < ttls[0] <= SHORT_TTL_S * 1000  # Redis expires `short`'s entry on its own
    assert (TTL_S - 60) * 1000 < ttls[1] <= TTL_S * 1000

    def expired() -> bool:  # asked on the other gateway: no worker's clock involved
        return _ask(other, "ttl", model="short").headers["x-orchestra-cache"] == "miss"

    wait_until(expired, what="`short`'s entry expired")
    assert _ask(other, "ttl", model="m1").headers["x-orchestra-cache"] == "hit"


def test_an_unreachable_redis_is_a_miss_not_an_error(engine: FakeEngineProcess) -> None:
    with _gateway(engine, f"redis://127.0.0.1:{free_port()}/0") as gw:
        for _ in range(2):
            assert _ask(gw, "no redis").headers["x-orchestra-cache"] == "miss"
        assert engine.stats()["requests_total"] == 2
        assert "every cache lookup misses" in gw.output()
