"""A broadcast of "something changed": every waiter wakes on the next `notify()`.

The owner calls `notify()` after each change; a waiter takes a `ticket()` while it still sees
the old state (under the owner's lock, say) and awaits it afterwards, so a change between the
look and the wait is never missed. Tickets are futures kept in one list, cleared in place.
"""

from __future__ import annotations

import asyncio
import contextlib


class Changes:
    def __init__(self) -> None:
        self._tickets: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        for ticket in self._tickets:
            if not ticket.done():
                ticket.set_result(None)
        self._tickets.clear()

    def ticket(self) -> asyncio.Future[None]:
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tickets.append(ticket)
        return ticket

    @staticmethod
    async def wait(ticket: asyncio.Future[None], timeout_s: float | None = None) -> bool:
        """True when a change came, False when `timeout_s` passed first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ticket, timeout_s)
            return True
        return False
