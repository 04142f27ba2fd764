"""The retry and fallback marks of the audit lines, on a real gateway and fake engines: a request
the proxy retried on another replica says `attempts: 2`, one the chain moved on from says which
model served (`fallback`) and every attempt it took."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

from .helpers import lines

pytestmark = pytest.mark.timeout(120)

_MAX_TRIES = 30  # requests sent until the balancer has picked the failing replica once


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, FakeEngineProcess]]:
    with (
        FakeEngineProcess("--served-model-name", "m", name="a") as a,
        FakeEngineProcess("--served-model-name", "m", name="b") as b,
        FakeEngineProcess("--served-model-name", "q", name="q") as q,
    ):
        yield {"a": a, "b": b, "q": q}


def _ask(url: str, model: str) -> httpx.Response:
    body = {"model": model, "prompt": "one two", "max_tokens": 2}
    return httpx.post(url + "/v1/completions", json=body, timeout=30)


def test_retries_and_fallbacks_are_marked(
    engines: dict[str, FakeEngineProcess], tmp_path: Path
) -> None:
    trail = tmp_path / "audit.jsonl"
    a, b, q = engines["a"], engines["b"], engines["q"]
    config = {
        "gateway": fast_gateway_section(
            free_port(),
            audit={"path": str(trail), "flush_s": 0.1},
            retries={"max_attempts": 2, "backoff_s": 0.0},
        ),
        "servers": [
            {"name": "m", "replicas": [{"url": a.url}, {"url": b.url}]},
            {"name": "q", "url": q.url},
        ],
        "fallbacks": {"m": ["q"]},
    }
    with GatewayProcess(config) as gw:
        gw.wait_ready("m", "q")
        # One 503 from replica `a` (retryable, before the first byte): the proxy tries `b`.
        a.set_fault("503", count=1)
        sent: dict[str, httpx.Response] = {}
        for _ in range(_MAX_TRIES):
            reply = _ask(gw.url, "m")
            sent[reply.headers["x-request-id"]] = reply
            if a.stats()["records"]:
                break
        assert a.stats()["records"], f"`a` never picked in {_MAX_TRIES} requests"
        assert all(r.status_code == 200 for r in sent.values())
        gw.wait_upstream_healthy("m", a.url)
        # Both replicas of `m` fail once: the proxy's two attempts, then the chain's `q`.
        a.set_fault("503", count=1)
        b.set_fault("503", count=1)
        fell = _ask(gw.url, "m")
        assert fell.status_code == 200 and fell.headers["x-orchestra-served-by"] == "q"
        wait_until(lambda: len(lines(trail)) == len(sent) + 1, timeout=10, what="audit lines")
    records = {r["request_id"]: r for r in lines(trail)}

    marks = [(records[k]["attempts"], records[k]["fallback"]) for k in sent]
    assert marks[-1] == (2, None)  # the retried one: the last sent
    assert marks[:-1] == [(1, None)] * (len(sent) - 1)
    retried = records[list(sent)[-1]]
    assert retried["status"] == 200 and retried["replica"] == b.url.removeprefix("http://")
    fallen = records[fell.headers["x-request-id"]]
    assert (fallen["attempts"], fallen["fallback"], fallen["served_by"]) == (3, "q", "q")
    assert fallen["model"] == "m" and fallen["status"] == 200
