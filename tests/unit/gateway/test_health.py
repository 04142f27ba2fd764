"""Replica health: passive marking, probing back after the cool-down, vLLM queue parsing."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestra.config import parse_config
from orchestra.gateway.cluster.routing import RoutingTable
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.upstream.gauges import parse_queue_load
from orchestra.gateway.upstream.health import HealthMonitor
from tests.unit.gateway.stub_pool import StubPool

VLLM_METRICS = b"""\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:prompt_tokens_total{model_name="m"} 1234.0
"""


def test_parse_queue_load_sums_running_and_waiting() -> None:
    assert parse_queue_load(VLLM_METRICS) == 7.0


def test_parse_queue_load_sums_several_engines() -> None:
    text = (
        b'vllm:num_requests_running{engine="0"} 1\n'
        b'vllm:num_requests_running{engine="1"} 2\n'
        b'vllm:num_requests_waiting{engine="1"} 0.5\n'
    )
    assert parse_queue_load(text) == 3.5


@pytest.mark.parametrize(
    "text",
    [b"", b"# nothing here\n", b"vllm:num_requests_running\n", b"vllm:num_requests_waiting x\n"],
)
def test_parse_queue_load_tolerates_junk(text: bytes) -> None:
    assert parse_queue_load(text) == 0.0


def test_parse_queue_load_skips_bad_lines_but_keeps_good_ones() -> None:
    text = b"vllm:num_requests_running NaNish\nvllm:num_requests_waiting 2\n"
    assert parse_queue_load(text) == 2.0


def _monitor(pool: StubPool, policy: str = "round_robin") -> HealthMonitor:
    config = parse_config(
        {
            "servers": [
                {
                    "name": "m",
                    "balancing": policy,
                    "replicas": [{"url": "http://a"}, {"url": "http://b"}],
                }
            ]
        }
    )
    return HealthMonitor(
        RoutingTable(config),
        pool,  # type: ignore[arg-type]
        GatewayMetrics(),
        cooldown_s=5.0,
        interval_s=0.1,
        probe_timeout_s=1.0,
    )


def _healthy_gauge(monitor: HealthMonitor, url: str) -> float | None:
    return monitor.metrics.registry.get_sample_value(
        "orchestra_upstream_healthy", {"model": "m", "upstream": url}
    )


def test_mark_down_and_up() -> None:
    monitor = _monitor(StubPool({}))
    route = monitor.table.routes["m"]
    a = route.replicas[0]
    before = time.monotonic()
    monitor.mark_down(route, a, "HTTP 503")
    assert not a.healthy and a.down_reason == "HTTP 503"
    assert before + 5.0 <= a.retry_at <= time.monotonic() + 5.0
    assert _healthy_gauge(monitor, "http://a") == 0
    assert route.pick() is route.replicas[1]
    monitor.mark_up(route, a)
    assert a.healthy and a.down_reason == ""
    assert _healthy_gauge(monitor, "http://a") == 1


def test_retry_after_longer_than_cooldown_wins() -> None:
    monitor = _monitor(StubPool({}))
    route = monitor.table.routes["m"]
    a = route.replicas[0]
    monitor.mark_down(route, a, "HTTP 503", retry_after_s=30)
    assert a.retry_at >= time.monotonic() + 29
    monitor.mark_down(route, a, "HTTP 503", retry_after_s=1)
    assert a.retry_at <= time.monotonic() + 5.0


def test_probe_waits_for_the_cooldown_then_brings_the_replica_back() -> None:
    pool = StubPool({"http://a/health": 200})
    monitor = _monitor(pool)
    route = monitor.table.routes["m"]
    a = route.replicas[0]
    monitor.mark_down(route, a, "connect")
    asyncio.run(monitor.check_once())
    assert pool.asked == [] and not a.healthy  # still cooling down
    a.retry_at = time.monotonic() - 1
    asyncio.run(monitor.check_once())
    assert pool.asked == ["http://a/health"]
    assert a.healthy


@pytest.mark.parametrize("status", [None, 503])
def test_failed_probe_keeps_it_down_for_another_cooldown(status: int | None) -> None:
    pool = StubPool({"http://a/health": status})
    monitor = _monitor(pool)
    route = monitor.table.routes["m"]
    a = route.replicas[0]
    monitor.mark_down(route, a, "connect")
    a.retry_at = time.monotonic() - 1
    asyncio.run(monitor.check_once())
    assert not a.healthy
    assert a.retry_at >= time.monotonic() + 4


def test_healthy_replicas_are_not_probed_unless_load_aware() -> None:
    pool = StubPool({"http://a/metrics": 200, "http://b/metrics": 200}, VLLM_METRICS)
    asyncio.run(_monitor(pool).check_once())
    assert pool.asked == []
    monitor = _monitor(pool, policy="load_aware")
    asyncio.run(monitor.check_once())
    assert sorted(pool.asked) == ["http://a/metrics", "http://b/metrics"]
    assert [r.load for r in monitor.table.routes["m"].replicas] == [7.0, 7.0]


def test_load_scrape_failure_keeps_the_last_value() -> None:
    pool = StubPool({"http://a/metrics": 200}, VLLM_METRICS)
    monitor = _monitor(pool, policy="load_aware")
    a, b = monitor.table.routes["m"].replicas
    b.load = 2.0
    asyncio.run(monitor.check_once())
    assert (a.load, b.load) == (7.0, 2.0)
