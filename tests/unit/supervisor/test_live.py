"""orchestra.cli.live.run_until_interrupted: Ctrl-C ends a view loop at once, whatever it awaits,
even when something on the way swallows the cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import pytest

from orchestra.cli.live import run_until_interrupted


def _interrupt_soon() -> None:
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)


def test_ctrl_c_ends_a_loop_waiting_on_a_call_that_never_answers() -> None:
    async def view(interrupted: Callable[[], bool]) -> int:
        _interrupt_soon()
        await asyncio.get_running_loop().create_future()  # an HTTP call with no answer
        return 1

    began = time.monotonic()
    assert run_until_interrupted(view) == 0
    assert time.monotonic() - began < 5


def test_ctrl_c_ends_a_loop_whose_wait_swallows_the_cancellation() -> None:
    rounds = 0

    async def view(interrupted: Callable[[], bool]) -> int:
        nonlocal rounds
        _interrupt_soon()
        while not interrupted():
            rounds += 1
            try:
                await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                pass  # a library that turns the cancellation into nothing
        return 0

    assert run_until_interrupted(view) == 0
    assert rounds >= 1


def test_an_error_without_ctrl_c_still_fails() -> None:
    async def view(interrupted: Callable[[], bool]) -> int:
        raise RuntimeError("unreachable")

    with pytest.raises(RuntimeError):
        run_until_interrupted(view)
