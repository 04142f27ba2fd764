"""The stream's one timer: an idle read fails after `idle_s`, a stream past its deadline fails
even while data flows, and a cancelled watch fails nothing."""

from __future__ import annotations

import asyncio

from orchestra.gateway.upstream.idle_watch import IdleWatch


def _watch(idle_s: float, total_s: float) -> tuple[IdleWatch, list[BaseException]]:
    failed: list[BaseException] = []
    loop = asyncio.get_running_loop()
    return IdleWatch(idle_s, loop.time() + total_s, failed.append), failed


def test_an_idle_read_fails_after_idle_s() -> None:
    async def go() -> None:
        watch, failed = _watch(0.05, 60.0)
        watch.reading()
        await asyncio.sleep(0.2)
        assert len(failed) == 1 and isinstance(failed[0], TimeoutError)
        assert not watch.expired
        watch.cancel()

    asyncio.run(go())


def test_reads_that_get_data_keep_it_alive_until_the_deadline() -> None:
    async def go() -> None:
        watch, failed = _watch(0.1, 0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not failed and loop.time() - started < 2.0:
            watch.reading()
            await asyncio.sleep(0.02)  # data comes well within idle_s
            watch.done()
        assert len(failed) == 1 and watch.expired
        assert 0.25 <= loop.time() - started < 1.0

    asyncio.run(go())


def test_not_reading_is_not_idle_and_cancel_stops_the_timer() -> None:
    async def go() -> None:
        watch, failed = _watch(0.05, 0.2)
        await asyncio.sleep(0.12)  # between reads (the client is slow): no idle failure
        assert failed == []
        watch.cancel()
        await asyncio.sleep(0.2)  # nor the deadline once cancelled
        assert failed == []

    asyncio.run(go())
