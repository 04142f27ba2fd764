"""`/metrics`, `/health` and `/v1/models` of a running gateway."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess("--served-model-name", "m1", "pair", name="m1") as fake:
        yield fake


@pytest.fixture(scope="module")
def dead_urls() -> tuple[str, str]:
    return f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def gateway(engine: FakeEngineProcess, dead_urls: tuple[str, str]) -> Iterator[GatewayProcess]:
    dead, dead2 = dead_urls
    config = {
        "gateway": fast_gateway_section(free_port()),
        "servers": [{"name": "m1", "url": engine.url}],
        "rotation_pool": [
            {"name": "dead", "url": dead},
            {"name": "pair", "replicas": [{"url": dead2}, {"url": engine.url}]},
        ],
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture
def http(gateway: GatewayProcess, engine: FakeEngineProcess) -> Iterator[httpx.Client]:
    reset_engine(engine)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


def _tokens(gateway: GatewayProcess, kind: str) -> float:
    return gateway.metric("orchestra_tokens_total", model="m1", kind=kind)


def _chat(http: httpx.Client, **extra: object) -> httpx.Response:
    body = {"model": "m1", "messages": [{"role": "user", "content": "one two three"}]}
    return http.post("/v1/chat/completions", json={**body, "max_tokens": 4, **extra})


def test_metrics_are_exposed_in_prometheus_text(http: httpx.Client) -> None:
    assert _chat(http).status_code == 200
    reply = http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    for name in (
        "orchestra_requests_total",
        "orchestra_request_duration_seconds",
        "orchestra_time_to_first_byte_seconds",
        "orchestra_inflight_requests",
        "orchestra_upstream_retries_total",
        "orchestra_tokens_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


def test_request_counters_and_histograms(http: httpx.Client, gateway: GatewayProcess) -> None:
    def snapshot() -> tuple[float, float, float, float]:
        return (
            gateway.metric("orchestra_requests_total", model="m1", status="200"),
            gateway.metric("orchestra_request_duration_seconds_count", model="m1"),
            gateway.metric("orchestra_time_to_first_byte_seconds_count", model="m1"),
            gateway.metric("orchestra_requests_total", model="m1", status="500"),
        )

    before = snapshot()
    for _ in range(3):
        assert _chat(http).status_code == 200
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "m1", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as reply:
        reply.read()
    after = snapshot()
    assert [a - b for a, b in zip(after, before, strict=True)] == [4, 4, 4, 0]
    assert gateway.metric("orchestra_inflight_requests", model="m1") == 0
    bucket = gateway.metric("orchestra_request_duration_seconds_bucket", model="m1", le="+Inf")
    assert bucket == after[1]


def test_tokens_counted_from_usage(http: httpx.Client, gateway: GatewayProcess) -> None:
    prompt, completion = _tokens(gateway, "prompt"), _tokens(gateway, "completion")
    assert _chat(http).status_code == 200  # 3 prompt words, 4 tokens
    assert (_tokens(gateway, "prompt"), _tokens(gateway, "completion")) == (
        prompt + 3,
        completion + 4,
    )

    # Streams count only when the client asked for usage (include_usage).
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "m1",
            "messages": [{"role": "user", "content": "a b"}],
            "max_tokens": 5,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as reply:
        reply.read()
    wait_until(lambda: _tokens(gateway, "completion") == completion + 9, what="stream usage")
    assert _tokens(gateway, "prompt") == prompt + 5
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "m1",
            "messages": [{"role": "user", "content": "a b"}],
            "max_tokens": 5,
            "stream": True,
        },
    ) as reply:
        reply.read()
    assert http.post("/v1/embeddings", json={"model": "m1", "input": "four words right here"})
    assert _tokens(gateway, "completion") == completion + 9
    assert _tokens(gateway, "prompt") == prompt + 9


def test_upstream_errors_are_counted_by_status(
    http: httpx.Client, engine: FakeEngineProcess, gateway: GatewayProcess
) -> None:
    before = gateway.metric("orchestra_requests_total", model="m1", status="500")
    engine.set_fault("500", count=1)
    assert _chat(http).status_code == 500
    assert gateway.metric("orchestra_requests_total", model="m1", status="500") == before + 1
    gateway.wait_ready("m1")


def test_models_list_every_configured_model_with_state(
    http: httpx.Client, gateway: GatewayProcess
) -> None:
    reply = http.get("/v1/models")
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert list(cards) == ["m1", "dead", "pair"]  # hot first, then the rotation pool
    for card in cards.values():
        assert card["object"] == "model"
        assert card["owned_by"] == "orchestra"
        assert card["managed"] is False
        assert isinstance(card["created"], int)
        assert card["state"] in {"ready", "down"}
    assert cards["m1"]["state"] == "ready"


def test_health_degraded_when_all_replicas_of_a_model_are_down(
    http: httpx.Client, gateway: GatewayProcess, dead_urls: tuple[str, str]
) -> None:
    # "pair" loses one of two replicas: still ready. "dead" loses its only one: degraded.
    assert http.post("/v1/completions", json={"model": "pair", "prompt": "x"}).status_code == 200
    assert http.post("/v1/completions", json={"model": "dead", "prompt": "x"}).status_code == 503
    reply = http.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": "degraded",
        "models": {"m1": "ready", "dead": "down", "pair": "ready"},
    }
    assert gateway.metric("orchestra_upstream_healthy", model="dead", upstream=dead_urls[0]) == 0
    assert gateway.metric("orchestra_upstream_healthy", model="pair", upstream=dead_urls[1]) == 0
    cards = {c["id"]: c for c in http.get("/v1/models").json()["data"]}
    assert cards["dead"]["state"] == "down"
    assert cards["pair"]["state"] == "ready"


def test_requests_refused_before_the_proxy_are_counted(
    http: httpx.Client, gateway: GatewayProcess
) -> None:
    """400/404/413 and "no upstream" are requests too: the error-rate rules must see them.
    Names that are not configured models share the bounded label `_unknown`."""

    def count(model: str, status: str) -> float:
        return gateway.metric("orchestra_requests_total", model=model, status=status)

    before = {
        key: count(*key)
        for key in [("_unknown", "404"), ("_unknown", "400"), ("m1", "400"), ("dead", "503")]
    }
    assert http.post("/v1/completions", json={"model": "gpt-9", "prompt": "x"}).status_code == 404
    assert http.post("/v1/completions", content=b"{oops").status_code == 400
    assert http.post("/v1/completions", json={"prompt": "x"}).status_code == 400
    assert http.post("/v1/completions", json={"model": "dead", "prompt": "x"}).status_code == 503
    assert http.post("/v1/completions", json={"model": "dead", "prompt": "x"}).status_code == 503
    after = {key: count(*key) for key in before}
    assert after[("_unknown", "404")] - before[("_unknown", "404")] == 1
    assert after[("_unknown", "400")] - before[("_unknown", "400")] == 2
    assert after[("dead", "503")] - before[("dead", "503")] == 2
    assert after[("m1", "400")] == before[("m1", "400")]
    assert not any(
        name == "orchestra_requests_total" and ("model", "gpt-9") in labels
        for name, labels in gateway.metrics()
    )
