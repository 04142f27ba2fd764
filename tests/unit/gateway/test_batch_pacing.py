"""Batch pacing: vLLM's queue gauges read from a real /metrics page, and the per-model limit
that follows them (grow while the engine has no queue and the limit is used, halve when
requests wait, interactive requests are in flight or the gateway refuses a row)."""

from __future__ import annotations

import asyncio

from orchestra.config import parse_config
from orchestra.gateway.batch.concurrency import ModelLimit, Pacer
from orchestra.gateway.batch.validation import validate
from orchestra.gateway.cluster.routing import RoutingTable
from orchestra.gateway.upstream.gauges import Gauges, parse_gauges
from orchestra.gateway.upstream.http1.pool import Pool

PAGE = b"""# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running_extra{engine="0"} 50.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
"""


def test_parse_gauges_sums_engines_and_ignores_other_names() -> None:
    assert parse_gauges(PAGE) == Gauges(running=3.0, waiting=5.0)
    assert parse_gauges(b"") == Gauges(0.0, 0.0)


def test_limit_grows_when_used_and_engine_idle_and_halves_on_queue() -> None:
    async def go() -> None:
        limit = ModelLimit(1, 16)
        assert limit.limit == 1  # slow start: one row ensures a cold model
        await limit.acquire()
        await limit.observe(Gauges(running=1, waiting=0))
        assert limit.limit == 2
        await limit.observe(Gauges(running=1, waiting=0))
        assert limit.limit == 2  # not grown: the batch does not use the whole limit
        await limit.acquire()
        for _ in range(20):
            limit.inflight = limit.limit
            await limit.observe(Gauges(running=limit.limit, waiting=0))
        assert limit.limit == 16  # capped
        await limit.observe(Gauges(running=16, waiting=3))
        assert limit.limit == 8
        await limit.refused()
        assert limit.limit == 4
        for _ in range(5):
            await limit.refused()
        assert limit.limit == 1  # floor

    asyncio.run(go())


def test_acquire_waits_for_a_release() -> None:
    async def go() -> None:
        limit = ModelLimit(1, 1)
        await limit.acquire()
        second = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        assert not second.done()
        await limit.release()
        await asyncio.wait_for(second, timeout=5)
        assert limit.inflight == 1

    asyncio.run(go())


def test_validation_lists_every_bad_line_and_keeps_no_rows() -> None:
    good = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}'
    result = validate(good + b"\n[1]\n\n" + good, "/v1/embeddings", {"m"}.__contains__, 10)
    assert [(e["line"], e["code"]) for e in result.errors] == [
        (2, "invalid_json_line"),
        (4, "duplicate_custom_id"),
    ]
    assert result.rows == []
    ok = validate(good, "/v1/embeddings", {"m"}.__contains__, 10)
    assert [(r.line, r.custom_id, r.model) for r in ok.rows] == [(1, "a", "m")]
    too_many = validate(good + b"\n" + good, "/v1/embeddings", {"m"}.__contains__, 1)
    assert [e["code"] for e in too_many.errors] == ["too_many_requests"]


def test_interactive_requests_shrink_the_batch_and_stop_its_growth() -> None:
    async def go() -> None:
        pool = Pool(4, keepalive_s=4.0, connect_s=1.0)
        try:
            config = parse_config({"servers": [{"name": "m", "url": "http://127.0.0.1:9"}]})
            table = RoutingTable(config)
            pacer = Pacer(table, pool, 1, 64, 1.0)
            limit = pacer.limit("m")
            limit.limit = limit.inflight = 8
            (replica,) = table.routes["m"].replicas
            replica.outstanding = 8  # only batch rows at the proxy
            assert pacer._interactive("m", limit) == 0
            replica.outstanding = 10  # and two people
            assert pacer._interactive("m", limit) == 2
            await limit.observe(Gauges(running=10, waiting=0), interactive=2)
            assert limit.limit == 4
            limit.inflight = 4
            await limit.succeeded()
            assert limit.limit == 4  # no growth while people are served
            await limit.observe(Gauges(running=4, waiting=0), interactive=0)
            assert limit.limit == 5  # they left: growing again
        finally:
            pool.close()

    asyncio.run(go())
