from __future__ import annotations

import asyncio

import pytest

from orchestra.config import parse_config
from orchestra.gateway.core.errors import BadRequest, Overloaded
from orchestra.gateway.protection.admission import Admission, ModelGate


def test_under_the_limit_is_a_counter() -> None:
    async def main() -> None:
        gate = ModelGate("m", 2, 0, 1.0, 1.0)
        await gate.acquire()
        await gate.acquire()
        assert gate.inflight == 2
        with pytest.raises(Overloaded) as info:
            await gate.acquire()
        assert info.value.status == 429 and info.value.headers["retry-after"] == "1"
        gate.release()
        gate.release()
        assert gate.inflight == 0

    asyncio.run(main())


def test_queue_is_ordered_by_priority_then_arrival() -> None:
    async def main() -> None:
        gate = ModelGate("m", 1, 10, 5.0, 1.0)
        await gate.acquire()
        order: list[str] = []

        async def wait(name: str, priority: int) -> None:
            await gate.acquire(priority)
            order.append(name)

        tasks = [
            asyncio.create_task(wait(n, p)) for n, p in (("a", 5), ("b", 0), ("c", 5), ("d", -1))
        ]
        await asyncio.sleep(0)
        assert gate.queued == 4
        for _ in range(4):
            gate.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert order == ["d", "b", "a", "c"]
        assert gate.inflight == 1 and gate.queued == 0

    asyncio.run(main())


def test_queue_wait_times_out_and_cancelled_waiters_leave() -> None:
    async def main() -> None:
        gate = ModelGate("m", 1, 2, 0.05, 3.0)
        await gate.acquire()
        with pytest.raises(Overloaded) as info:
            await gate.acquire()
        assert info.value.headers["retry-after"] == "3"
        task = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.queued == 0
        gate.release()
        assert gate.inflight == 0

    asyncio.run(main())


def test_admission_only_for_configured_models() -> None:
    config = parse_config(
        {
            "servers": [
                {"name": "a", "url": "http://127.0.0.1:1", "max_inflight": 3, "max_queue": 5},
                {"name": "b", "url": "http://127.0.0.1:2"},
            ]
        }
    )
    admission = Admission(config)
    gate = admission.gate("a")
    assert gate is not None and gate.max_inflight == 3 and gate.max_queue == 5
    assert admission.gate("b") is None
    assert admission.priority(None) == 0 and admission.priority("-3") == -3
    with pytest.raises(BadRequest):
        admission.priority("high")
