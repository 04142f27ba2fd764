"""orchestra.loops: background loops survive their errors, and cancelling them stops them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from orchestra.loops import every, run_forever


async def _until(predicate: object, limit_s: float = 5.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def _cancelled(task: asyncio.Task[None]) -> bool:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


def test_run_forever_restarts_a_failed_loop_and_stops_when_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()  # the third run lasts

    async def main() -> bool:
        task = asyncio.create_task(run_forever("demo", loop, restart_delay_s=0.01))
        await _until(lambda: len(runs) == 3)
        return await _cancelled(task)

    with caplog.at_level(logging.ERROR, logger="orchestra.loops"):
        assert asyncio.run(main()) is True
    assert runs == [0, 1, 2]
    assert caplog.text.count("background task demo failed") == 2


def test_every_goes_on_after_a_failed_step(caplog: pytest.LogCaptureFixture) -> None:
    steps: list[float] = []

    async def step() -> None:
        steps.append(asyncio.get_running_loop().time())
        if len(steps) == 1:
            raise ValueError("bad step")

    async def main() -> tuple[float, bool]:
        began = asyncio.get_running_loop().time()
        task = asyncio.create_task(every("demo step", 0.01, step, first_after_s=0.05))
        await _until(lambda: len(steps) >= 3)
        return began, await _cancelled(task)

    with caplog.at_level(logging.ERROR, logger="orchestra.loops"):
        began, cancelled = asyncio.run(main())
    assert cancelled
    assert steps[0] - began >= 0.05  # the first step waits `first_after_s`
    assert "demo step failed" in caplog.text and "bad step" in caplog.text


def test_cancellation_inside_a_step_ends_every() -> None:
    entered = asyncio.Event()

    async def step() -> None:
        entered.set()
        await asyncio.Event().wait()

    async def main() -> bool:
        task = asyncio.create_task(every("blocked", 1.0, step, first_after_s=0.0))
        await asyncio.wait_for(entered.wait(), 5)
        return await _cancelled(task)

    assert asyncio.run(main()) is True
