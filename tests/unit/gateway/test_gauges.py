"""The one reader of vLLM's queue gauges: readings kept per URL for `max_age_s`, failures not
kept, concurrent reads sharing one scrape, the health monitor and batch pacing sharing it."""

from __future__ import annotations

import asyncio
from typing import Any

from orchestra.config import parse_config
from orchestra.gateway.batch.concurrency import Pacer
from orchestra.gateway.cluster.routing import RoutingTable
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.upstream.gauges import GaugeReader, Gauges, parse_gauges
from orchestra.gateway.upstream.health import HealthMonitor
from tests.unit.gateway.stub_pool import StubPool

PAGE = b'vllm:num_requests_running{engine="0"} 2.0\nvllm:num_requests_waiting{engine="0"} 3.0\n'


def _pages(answers: dict[str, int | None]) -> StubPool:
    """The engines' pages: GETs answered by URL, each with PAGE."""
    return StubPool(answers, PAGE)


def _reader(pages: StubPool) -> GaugeReader:
    return GaugeReader(pages, 1.0)  # type: ignore[arg-type]


def test_a_young_reading_is_reused_and_an_old_one_scraped_again() -> None:
    async def go() -> None:
        pages = _pages({"http://a/metrics": 200})
        reader = _reader(pages)
        assert await reader.read("http://a") == Gauges(2.0, 3.0)
        assert await reader.read("http://a", max_age_s=60) == Gauges(2.0, 3.0)
        assert pages.asked == ["http://a/metrics"]
        assert (await reader.read("http://a", max_age_s=0.0)) is not None  # 0: always fresh
        assert len(pages.asked) == 2

    asyncio.run(go())


def test_failures_are_none_and_not_kept() -> None:
    async def go() -> None:
        pages = _pages({"http://a/metrics": 503})
        reader = _reader(pages)
        assert await reader.read("http://a", max_age_s=60) is None
        assert await reader.read("http://b", max_age_s=60) is None  # refused
        pages.answers = {"http://a/metrics": 200}
        assert await reader.read("http://a", max_age_s=60) == Gauges(2.0, 3.0)
        assert pages.asked == ["http://a/metrics", "http://b/metrics", "http://a/metrics"]

    asyncio.run(go())


def test_concurrent_reads_share_one_scrape_even_when_one_reader_is_cancelled() -> None:
    async def go() -> None:
        pages = _pages({"http://a/metrics": 200})
        pages.gate = asyncio.Event()
        reader = _reader(pages)
        first = asyncio.create_task(reader.read("http://a"))
        second = asyncio.create_task(reader.read("http://a"))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        pages.gate.set()
        assert await second == Gauges(2.0, 3.0)
        assert first.cancelled()
        assert pages.asked == ["http://a/metrics"]

    asyncio.run(go())


def test_forget_drops_readings_of_engines_that_left() -> None:
    async def go() -> None:
        pages = _pages({"http://a/metrics": 200, "http://b/metrics": 200})
        reader = _reader(pages)
        await reader.read("http://a")
        await reader.read("http://b")
        reader.forget({"http://b"})
        await reader.read("http://a", max_age_s=60)
        await reader.read("http://b", max_age_s=60)
        assert pages.asked == ["http://a/metrics", "http://b/metrics", "http://a/metrics"]

    asyncio.run(go())


def test_health_and_pacing_sharing_a_reader_scrape_each_replica_once() -> None:
    async def go() -> None:
        config = parse_config(
            {
                "servers": [
                    {
                        "name": "m",
                        "balancing": "load_aware",
                        "replicas": [{"url": "http://a"}, {"url": "http://b"}],
                    }
                ]
            }
        )
        table = RoutingTable(config)
        pages = _pages({"http://a/metrics": 200, "http://b/metrics": 200})
        reader = _reader(pages)
        pool: Any = pages
        monitor = HealthMonitor(
            table,
            pool,
            GatewayMetrics(),
            cooldown_s=5.0,
            interval_s=30.0,
            probe_timeout_s=1.0,
            gauges=reader,
        )
        pacer = Pacer(table, pool, 1, 8, 1.0, gauges=reader)
        limit = pacer.limit("m")
        await pacer.poll()  # the pacer scrapes (fresh)...
        await monitor.check_once()  # ...and the monitor reuses those readings
        assert sorted(pages.asked) == ["http://a/metrics", "http://b/metrics"]
        assert [r.load for r in table.routes["m"].replicas] == [5.0, 5.0]
        assert limit.engine_queue == 6.0  # both replicas' waiting requests

    asyncio.run(go())


def test_the_parser_reads_what_the_exposition_format_allows() -> None:
    page = (
        b"# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        b"# TYPE vllm:num_requests_running gauge\n"
        b'vllm:num_requests_running{engine="0",model_name="a \\"quoted\\" name"} 2.0\n'
        b'vllm:num_requests_running{engine="1"} 1e0 1700000000000\n'  # with a timestamp
        b"vllm:num_requests_waiting +Inf\n"
        b"vllm:num_requests_waiting_extra 100\n"  # another metric
        b'vllm:request_success_total{finished_reason="stop"} 7\n'
    )
    assert parse_gauges(page) == Gauges(3.0, float("inf"))
