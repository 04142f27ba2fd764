"""A budget under concurrency: bursts of 64 concurrent requests against a key's budget of N
tokens a day, until a burst is refused whole. Admission reserves each call's estimate, so the
spend ends at N or above by less than one request: in this process (one worker), and in a real
Redis (Debian's `redis-server`, started by the test) shared by two workers.

Run with `-s` to see the figures (served per burst, the spend, the overshoot)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.fake_engine import FakeEngineProcess
from tests.integration.gateway.test_redis_limits import redis_url
from tests.integration.usage.helpers import KEY_A, gateway, totals

pytestmark = pytest.mark.timeout(300)

__all__ = ["redis_url"]  # the fixture, from the rate limits' test: one way to start Redis

BUDGET = 400  # tokens a day
CONCURRENT = 64
BODY = {"model": "m", "prompt": "one two three", "max_tokens": 20}  # 3 + 20 tokens each
ONE_REQUEST = 23


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    # Slow enough to first token that a burst's requests are all in flight together.
    with FakeEngineProcess("--served-model-name", "m", "--ttft-ms", "300", name="m") as fake:
        yield fake


def _burst(gw: GatewayProcess) -> tuple[int, int, set[int]]:
    """(served, their tokens, statuses) of CONCURRENT requests sent at once."""
    headers = {"authorization": f"Bearer {KEY_A}"}

    def one(_: int) -> httpx.Response:
        return httpx.post(gw.url + "/v1/completions", json=BODY, headers=headers, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as pool:
        replies = list(pool.map(one, range(CONCURRENT)))
    served = [r for r in replies if r.status_code == 200]
    tokens = sum(r.json()["usage"]["total_tokens"] for r in served)
    return len(served), tokens, {r.status_code for r in replies}


def _until_refused(gw: GatewayProcess, label: str) -> int:
    spent, bursts = 0, []
    while True:
        served, tokens, statuses = _burst(gw)
        assert statuses <= {200, 429}, statuses
        bursts.append(served)
        spent += tokens
        if served == 0:
            break
        assert len(bursts) < 20, bursts
    overshoot = spent - BUDGET
    print(
        f"\n[{label}] budget {BUDGET} tokens/day, bursts of {CONCURRENT}: served {bursts}; "
        f"spent {spent}; overshoot {overshoot} (one request: {ONE_REQUEST})"
    )
    assert 0 <= overshoot < ONE_REQUEST
    got = totals(gw)[("team-a", "m")]
    assert got["prompt_tokens"] + got["completion_tokens"] == spent
    return overshoot


def test_one_worker_overshoots_by_less_than_one_request(
    engine: FakeEngineProcess, tmp_path: Path
) -> None:
    with gateway(engine, {"dir": str(tmp_path)}, budget_a={"tokens_per_day": BUDGET}) as gw:
        _until_refused(gw, "one worker, local budget")


def test_two_workers_share_the_budget_in_redis(
    engine: FakeEngineProcess, tmp_path: Path, redis_url: str
) -> None:
    budget = {"tokens_per_day": BUDGET}
    usage = {"dir": str(tmp_path)}
    with gateway(engine, usage, budget_a=budget, workers=2, redis_url=redis_url) as gw:
        gw.wait_workers(2)
        _until_refused(gw, "two workers, Redis")
