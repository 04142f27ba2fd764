"""The issue-13 bench pieces run: session stickiness through two workers, and the nginx leg
of the ceiling comparisons relaying to a fake upstream (Debian nginx, installed when missing),
whole replies and SSE streams, and the ASGI floor relay (bench/asgi_floor.py) beside them."""

from __future__ import annotations

import httpx
import pytest

from bench.affinity import session_figures
from bench.asgi_floor import asgi_floor
from bench.ceiling import ensure_nginx, nginx_proxy
from bench.stream_ceiling import stream_cpu_figures
from tests.fake_engine import FakeEngineProcess

pytestmark = pytest.mark.timeout(240)


def test_session_figures_report_full_stickiness() -> None:
    figures = session_figures(sessions=6, per_session=3)
    assert figures["sessions"] == 6
    assert figures["mean_share_on_one_replica"] == 1.0
    assert sum(figures["sessions_per_replica"].values()) == 6


def test_nginx_leg_proxies_to_the_upstream() -> None:
    binary = ensure_nginx()
    if binary is None:
        pytest.skip("nginx is not installed and apt-get as root is not available")
    with FakeEngineProcess("--served-model-name", "bench", name="bench") as upstream:
        with nginx_proxy(binary, upstream.url, None) as (url, _):
            body = {"model": "bench", "prompt": "x", "max_tokens": 2}
            reply = httpx.post(url + "/v1/completions", json=body, timeout=10)
            assert reply.status_code == 200
            assert reply.json()["usage"]["completion_tokens"] == 2
        assert upstream.stats()["by_path"]["/v1/completions"] == 1


def test_asgi_floor_relays_whole_replies_and_streams() -> None:
    with FakeEngineProcess("--served-model-name", "bench", name="bench") as upstream:
        with asgi_floor(upstream.url, None) as (url, _):
            body = {"model": "bench", "prompt": "x", "max_tokens": 2}
            reply = httpx.post(url + "/v1/completions", json=body, timeout=10)
            assert reply.status_code == 200
            assert reply.json()["usage"]["completion_tokens"] == 2
            streamed = httpx.post(
                url + "/v1/completions", json={**body, "stream": True}, timeout=10
            )
            assert streamed.headers["content-type"].startswith("text/event-stream")
            assert streamed.text.rstrip().endswith("data: [DONE]")
        assert upstream.stats()["by_path"]["/v1/completions"] == 2


def test_stream_ceiling_measures_every_leg_on_the_same_streams() -> None:
    if ensure_nginx() is None:
        pytest.skip("nginx is not installed and apt-get as root is not available")
    cpus: dict[str, int | None] = {"gateway": None, "upstream": None, "load": None}
    figures = stream_cpu_figures(cpus, concurrency=8, seconds=1.0, rounds=1)
    assert set(figures["cpu_us_per_chunk"]) == {"nginx", "asgi_floor", "gateway"}
    # each relayed the paced streams: 8 streams of 20 tokens/s are ~160 events a second
    assert min(figures["chunks_per_s"].values()) >= 8 * 10
    # CPU is read in clock ticks (10 ms): a second of 8 streams may read 0, never less
    assert all(cost >= 0 for cost in figures["cpu_us_per_chunk"].values())
