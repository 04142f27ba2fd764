"""The stream relay's one timer per stream (`IdleWatch`): an upstream that sends nothing for
`idle_read_s`, or a stream still running at its request's deadline, fails the read.

It replaces an `asyncio.timeout` around every read (enter, reschedule, exit: ~9% of the
gateway's CPU at 256 concurrent streams, py-spy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IdleWatch:
    """Fails `fail` with TimeoutError when a read has waited `idle_s`, or once the stream is
    past its `deadline` (loop time: the request's `total_s` bound).

    One timer per stream that re-arms itself, instead of a timeout context per chunk (the
    upstream connection's reads have no timer of their own): the relay only stores the time
    its wait for upstream data starts (`reading()`), and clears it when the wait ends
    (`done()`: data came, or it is sending to the client). The timer fires at most once per
    `idle_s`, and at the deadline.
    """

    __slots__ = ("_deadline", "_fail", "_handle", "_idle", "_loop", "expired", "since")

    def __init__(
        self, idle_s: float, deadline: float, fail: Callable[[BaseException], None]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle = idle_s
        self._deadline = deadline
        self._fail = fail
        self.since = 0.0  # loop time the current read started; 0 = not reading
        self.expired = False  # the deadline failed the stream (not an idle upstream)
        self._handle = self._loop.call_at(min(self._loop.time() + idle_s, deadline), self._check)

    def reading(self) -> None:
        self.since = self._loop.time()

    def done(self) -> None:
        self.since = 0.0

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self._deadline:
            self.expired = True
            self._fail(TimeoutError())
            return
        if self.since and now >= self.since + self._idle:
            self._fail(TimeoutError())
            return
        due = self.since + self._idle if self.since else now + self._idle
        self._handle = self._loop.call_at(min(due, self._deadline), self._check)

    def cancel(self) -> None:
        self._handle.cancel()
