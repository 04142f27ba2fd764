"""Panic mode: a model whose every replica is marked down still tries them before refusing."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

PATH = "/v1/completions"
BODY = {"model": "late", "prompt": "x", "max_tokens": 1}


def test_upstream_started_after_the_gateway_serves_the_first_request_after_it_listens(
    fake_engine_factory: Callable[..., FakeEngineProcess],
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = {
        # A cool-down far longer than the test: only panic mode can bring the replica back.
        "gateway": fast_gateway_section(
            free_port(), unhealthy_cooldown_s=300, health_check_interval_s=60
        ),
        "servers": [{"name": "late", "url": url}],
    }
    with GatewayProcess(config) as gw, httpx.Client(base_url=gw.url, timeout=10) as http:
        # Nothing listens yet: refused, and the replica is marked down.
        assert http.post(PATH, json=BODY).status_code == 503
        assert gw.metric("orchestra_upstream_healthy", model="late", upstream=url) == 0
        assert gw.health()["models"]["late"] == "down"

        # The engine comes up a second later; the first request after it listens is served.
        engine = FakeEngineProcess("--startup-delay", "1", name="late", port=port)
        engine.start(wait_ready=False)
        try:
            wait_until(engine.healthy, timeout=20, what="late engine listening")
            reply = http.post(PATH, json=BODY)
            assert reply.status_code == 200
            assert reply.json()["choices"][0]["text"]
            # ... and the success put the replica back at once.
            assert gw.metric("orchestra_upstream_healthy", model="late", upstream=url) == 1
            assert gw.health()["models"]["late"] == "ready"
        finally:
            engine.stop()


def test_panic_tries_each_replica_once_per_request(
    fake_engine_factory: Callable[..., FakeEngineProcess],
) -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    config = {
        "gateway": fast_gateway_section(free_port(), unhealthy_cooldown_s=300),
        "servers": [{"name": "late", "replicas": [{"url": u} for u in dead]}],
    }
    with GatewayProcess(config) as gw, httpx.Client(base_url=gw.url, timeout=10) as http:
        retries = "orchestra_upstream_retries_total"
        assert http.post(PATH, json=BODY).status_code == 503  # both tried, both marked down
        first = gw.metric(retries, model="late", reason="connect")
        assert first >= 1
        assert gw.health()["models"]["late"] == "down"
        # In panic the next request tries them again, exactly as the first did (no extra
        # attempts on a replica it has already tried).
        assert http.post(PATH, json=BODY).status_code == 503
        assert gw.metric(retries, model="late", reason="connect") == 2 * first
