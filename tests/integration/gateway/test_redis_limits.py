"""`gateway.redis_url`: a key's rate limit holds across two workers, kept in a real Debian
`redis-server` (installed with apt-get when missing); without Redis each worker falls back to
its local buckets."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import httpx
import pytest

from orchestra.gateway.protection.keys import hash_key
from tests.conftest import GatewayProcess, fast_gateway_section
from tests.fake_engine import FakeEngineProcess, free_port
from tests.redis_server import install_redis, redis_server

pytestmark = pytest.mark.timeout(120)

PATH = "/v1/completions"
BODY = {"model": "r", "prompt": "x", "max_tokens": 1}
KEY = "sk-shared"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    why = install_redis()
    if why:
        pytest.skip(why)
    with redis_server() as url:
        yield url


def _gateway(engine: FakeEngineProcess, redis_url: str, rpm: int) -> GatewayProcess:
    key = {"name": "team", "sha256": hash_key(KEY), "requests_per_minute": rpm}
    section = fast_gateway_section(free_port(), workers=2, api_keys=[key], redis_url=redis_url)
    servers = [{"name": "r", "url": engine.url}]
    gw = GatewayProcess({"gateway": section, "servers": servers, "batch": {"enabled": False}})
    gw.start_timeout = 90.0
    return gw


def _calls(url: str, n: int) -> tuple[collections.Counter[int], set[str]]:
    """The statuses of `n` calls, and the workers that answered them (x-request-id's prefix
    is the worker's: refused calls count too, so 12 calls, not only the 7 served, show both)."""
    headers = {"authorization": f"Bearer {KEY}"}
    replies = [  # a new connection each: the kernel spreads them over the workers
        httpx.post(url + PATH, json=BODY, headers=headers, timeout=10) for _ in range(n)
    ]
    workers = {r.headers["x-request-id"][:16] for r in replies}
    return collections.Counter(r.status_code for r in replies), workers


def test_a_keys_limit_holds_across_workers(redis_url: str) -> None:
    with FakeEngineProcess("--served-model-name", "r", name="r") as engine:
        with _gateway(engine, redis_url, rpm=7) as gw:
            gw.wait_workers(2)
            statuses, workers = _calls(gw.url, 12)
            assert statuses == {200: 7, 429: 5}  # exactly the limit, whichever worker served
            assert len(workers) == 2  # (and both workers did answer)
            refused = httpx.post(
                gw.url + PATH, json=BODY, headers={"authorization": f"Bearer {KEY}"}, timeout=10
            )
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.headers["x-ratelimit-limit-requests"] == "7"
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_without_redis_each_worker_keeps_serving() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with FakeEngineProcess("--served-model-name", "r", name="r") as engine:
        with _gateway(engine, dead, rpm=100) as gw:
            assert _calls(gw.url, 6)[0] == {200: 6}
            assert "redis unreachable" in gw.output()
