"""The supervisor's shutdown as commands see it: once it begins, a command still waiting (a swap,
a drain, a load) answers ShuttingDown at once instead of holding a gateway's drain or the
server's graceful shutdown for work that shutdown ends anyway. Quick commands (an ensure of a
READY model) still answer; engines keep serving until `Manager.close` stops them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from .errors import ShuttingDown

T = TypeVar("T")


class Closing:
    def __init__(self) -> None:
        self._begun = asyncio.Event()

    def begin(self) -> None:
        self._begun.set()

    @property
    def begun(self) -> bool:
        return self._begun.is_set()

    async def until(self, work: Awaitable[T]) -> T:
        """`work`'s result, or ShuttingDown as soon as the shutdown begins (`work` is then
        cancelled: a swap it joined goes on until `Manager.close` stops it)."""
        task = asyncio.ensure_future(work)
        begun = asyncio.ensure_future(self._begun.wait())
        try:
            await asyncio.wait({task, begun}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()  # the caller gave up: so does the command, as it would unwrapped
            raise
        finally:
            begun.cancel()
        if task.done():  # finished (even as the shutdown began): its own result
            return task.result()
        task.cancel()
        raise ShuttingDown("the supervisor is shutting down")
