"""Balancing across real fake-engine replicas, failover, retries, and probing a replica back."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

NAMES = ("weighted", "rr", "failover", "retry502", "retry503", "allbad", "least", "load")
PATH = "/v1/completions"


def _body(model: str) -> dict[str, object]:
    return {"model": model, "prompt": "x", "max_tokens": 1}


def _served(engine: FakeEngineProcess) -> int:
    return int(engine.stats()["by_path"].get(PATH, 0))


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[FakeEngineProcess, FakeEngineProcess]]:
    args = ("--served-model-name", *NAMES)
    with FakeEngineProcess(*args, name="a") as a, FakeEngineProcess(*args, name="b") as b:
        yield a, b


@pytest.fixture(scope="module")
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def gateway(
    engines: tuple[FakeEngineProcess, FakeEngineProcess], dead_url: str
) -> Iterator[GatewayProcess]:
    a, b = engines
    config = {
        # A long cool-down: a replica marked down stays out for the whole test.
        "gateway": fast_gateway_section(free_port(), unhealthy_cooldown_s=30),
        "servers": [
            {
                "name": "weighted",
                "balancing": "weighted",
                "replicas": [{"url": a.url, "weight": 3}, {"url": b.url, "weight": 1}],
            },
            {"name": "rr", "replicas": [{"url": a.url}, {"url": b.url}]},
            {"name": "failover", "replicas": [{"url": dead_url}, {"url": a.url}]},
            {"name": "retry502", "replicas": [{"url": a.url}, {"url": b.url}]},
            {"name": "retry503", "replicas": [{"url": a.url}, {"url": b.url}]},
            {"name": "allbad", "replicas": [{"url": a.url}, {"url": b.url}]},
            {
                "name": "least",
                "balancing": "least_outstanding",
                "replicas": [{"url": a.url}, {"url": b.url}],
            },
            {
                "name": "load",
                "balancing": "load_aware",
                "replicas": [{"url": a.url}, {"url": b.url}],
            },
        ],
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean(engines: tuple[FakeEngineProcess, FakeEngineProcess]) -> None:
    for engine in engines:
        reset_engine(engine)


@pytest.fixture
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


def test_weighted_three_to_one(
    http: httpx.Client, engines: tuple[FakeEngineProcess, FakeEngineProcess]
) -> None:
    a, b = engines
    total = 400
    statuses = collections.Counter(
        http.post(PATH, json=_body("weighted")).status_code for _ in range(total)
    )
    assert statuses == {200: total}
    served_a, served_b = _served(a), _served(b)
    assert served_a + served_b == total
    assert served_a / total == pytest.approx(0.75, abs=0.05)
    assert served_b / total == pytest.approx(0.25, abs=0.05)


def test_round_robin_evenly(
    http: httpx.Client, engines: tuple[FakeEngineProcess, FakeEngineProcess]
) -> None:
    a, b = engines
    for _ in range(100):
        assert http.post(PATH, json=_body("rr")).status_code == 200
    assert (_served(a), _served(b)) == (50, 50)


def test_failover_when_one_replica_is_dead(
    http: httpx.Client,
    engines: tuple[FakeEngineProcess, FakeEngineProcess],
    gateway: GatewayProcess,
    dead_url: str,
) -> None:
    a, _ = engines
    # The first pick is the dead replica (round-robin starts at the first): one retry, then a.
    replies = [http.post(PATH, json=_body("failover")) for _ in range(20)]
    assert [r.status_code for r in replies] == [200] * 20
    assert _served(a) == 20
    assert (
        gateway.metric("orchestra_upstream_retries_total", model="failover", reason="connect") == 1
    )
    assert gateway.metric("orchestra_upstream_healthy", model="failover", upstream=dead_url) == 0
    assert gateway.health()["models"]["failover"] == "ready"  # one replica is enough


@pytest.mark.parametrize("status", [502, 503])
def test_502_and_503_are_retried_on_the_other_replica(
    http: httpx.Client,
    engines: tuple[FakeEngineProcess, FakeEngineProcess],
    gateway: GatewayProcess,
    status: int,
) -> None:
    a, b = engines
    model = f"retry{status}"
    a.set_fault("error", status=status, count=1)
    reason = f"http_{status}"
    retries = "orchestra_upstream_retries_total"
    before = gateway.metric(retries, model=model, reason=reason)
    # Whichever replica the balancer starts with, a's one failure is met within two requests.
    for i in range(2):
        reply = http.post(PATH, json=_body(model), headers={"x-request-id": f"r{status}-{i}"})
        assert reply.status_code == 200
    failed = [r for r in a.stats()["records"] if r["status"] == status]
    assert len(failed) == 1
    rid = failed[0]["x_request_id"]
    served_by_b = [r for r in b.stats()["records"] if r["x_request_id"] == rid]
    assert [r["status"] for r in served_by_b] == [200]  # the same request, on the other replica
    assert gateway.metric(retries, model=model, reason=reason) - before == 1


def test_every_replica_failing_ends_after_max_attempts(
    http: httpx.Client,
    engines: tuple[FakeEngineProcess, FakeEngineProcess],
) -> None:
    for engine in engines:
        engine.set_fault("503", count=5)
    reply = http.post(PATH, json=_body("allbad"))
    assert reply.status_code == 503
    assert reply.json()["error"]["message"] == "Injected fault: 503"  # the upstream's own
    assert sum(_served(e) for e in engines) == 2  # each replica once; both are down now


def _open_slow_streams(
    stack: contextlib.ExitStack, base_url: str, model: str, count: int
) -> list[Iterator[bytes]]:
    """Streams that stay open (1 token/s) until `stack` closes them. Keep the returned
    iterators referenced: a dropped httpx iterator closes its response at once."""
    body = {"model": model, "prompt": "x", "max_tokens": 100, "stream": True}
    client = stack.enter_context(httpx.Client(base_url=base_url, timeout=10))
    streams = []
    for _ in range(count):
        reply = stack.enter_context(client.stream("POST", PATH, json=body))
        chunks = reply.iter_raw()
        assert next(chunks).startswith(b"data: ")
        streams.append(chunks)
    return streams


def test_least_outstanding_avoids_the_busy_replica(
    http: httpx.Client,
    engines: tuple[FakeEngineProcess, FakeEngineProcess],
    gateway: GatewayProcess,
) -> None:
    for engine in engines:
        engine._call("/fake/config", {"token_rate": 1})
    with contextlib.ExitStack() as stack:
        held = _open_slow_streams(stack, gateway.url, "least", 1)  # via the gateway: outstanding 1
        busy, idle = sorted(engines, key=lambda e: -int(e.stats()["active"]))
        assert (busy.stats()["active"], idle.stats()["active"]) == (1, 0)
        for _ in range(6):
            assert http.post(PATH, json=_body("least")).status_code == 200
        assert _served(idle) == 6
        assert _served(busy) == 1  # only the open stream
        assert len(held) == 1  # (the streams stay referenced, so open, until here)


def test_load_aware_follows_the_engines_own_queue(
    http: httpx.Client, engines: tuple[FakeEngineProcess, FakeEngineProcess]
) -> None:
    a, b = engines
    for engine in engines:
        engine._call("/fake/config", {"token_rate": 1})
    with contextlib.ExitStack() as stack:
        # Other clients load `a` directly, behind the gateway's back: only vLLM's gauges show it.
        held = _open_slow_streams(stack, a.url, "load", 3)
        assert "vllm:num_requests_running{" in httpx.get(a.url + "/metrics").text
        # Once the gateway has scraped a's queue, every new request goes to b.
        wait_until(lambda: _window_all_to(http, b), timeout=10, what="gateway sees a's queue")
        served_a = _served(a)
        for _ in range(10):
            assert http.post(PATH, json=_body("load")).status_code == 200
        assert _served(a) == served_a
        assert a.stats()["running"] == len(held)


def _window_all_to(http: httpx.Client, engine: FakeEngineProcess, n: int = 4) -> bool:
    before = _served(engine)
    for _ in range(n):
        http.post(PATH, json=_body("load"))
    return _served(engine) - before == n


def test_replica_taken_out_and_probed_back(
    fake_engine_factory: Callable[..., FakeEngineProcess],
) -> None:
    c = fake_engine_factory(name="pb")
    d = fake_engine_factory(name="pb")
    config = {
        "gateway": fast_gateway_section(free_port()),
        "servers": [{"name": "pb", "replicas": [{"url": c.url}, {"url": d.url}]}],
    }
    with GatewayProcess(config) as gw, httpx.Client(base_url=gw.url, timeout=10) as http:
        c.stop()
        for _ in range(10):
            assert http.post(PATH, json=_body("pb")).status_code == 200
        assert gw.metric("orchestra_upstream_healthy", model="pb", upstream=c.url) == 0
        assert gw.health() == {"status": "ok", "models": {"pb": "ready"}}
        served_by_d = _served(d)
        assert served_by_d == 10

        # c comes back on the same port; the health probe puts it back into rotation.
        revived = fake_engine_factory(name="pb", port=c.port)
        gw.wait_upstream_healthy("pb", c.url)
        assert gw.metric("orchestra_upstream_healthy", model="pb", upstream=c.url) == 1
        for _ in range(10):
            assert http.post(PATH, json=_body("pb")).status_code == 200
        assert _served(revived) == 5
        assert _served(d) - served_by_d == 5


def test_all_replicas_down_then_back(
    fake_engine_factory: Callable[..., FakeEngineProcess],
) -> None:
    e = fake_engine_factory(name="solo")
    config = {
        "gateway": fast_gateway_section(free_port()),
        "servers": [{"name": "solo", "url": e.url}],
    }
    with GatewayProcess(config) as gw, httpx.Client(base_url=gw.url, timeout=10) as http:
        e.stop()
        assert http.post(PATH, json=_body("solo")).status_code == 503
        assert gw.health() == {"status": "degraded", "models": {"solo": "down"}}
        fake_engine_factory(name="solo", port=e.port)
        wait_until(lambda: gw.health()["status"] == "ok", what="solo probed back")
        assert http.post(PATH, json=_body("solo")).status_code == 200
