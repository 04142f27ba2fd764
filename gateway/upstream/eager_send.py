"""`send_now`: an ASGI `send` run from a plain callback, without a task.

The stream relay sends each upstream chunk from the upstream socket's read callback
(`stream_relay`), so a chunk costs no task wake-up. An ASGI `send` is a coroutine, but a
server's send only waits when the client is not keeping up (its write buffer is full); in the
usual case it writes the bytes and returns. `send_now` runs the coroutine to its first wait:
- it finished (the usual case): None;
- it waits: an awaitable for the rest, which the relay's task awaits before anything else is
  sent, so the order of the bytes is kept. It is the same as awaiting the coroutine from where
  it stopped: what the coroutine waits on goes to the awaiting task, and what the task sends
  in or throws (a cancellation) goes back to the coroutine.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, cast

from starlette.types import Message, Send


def send_now(send: Send, message: Message) -> Rest | None:
    """Run `send(message)` until it finishes or first waits; exceptions propagate."""
    coro = cast(Coroutine[Any, Any, None], send(message))  # an ASGI send is `async def`
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return Rest(coro, waiting)


class Rest:
    """The rest of a coroutine that has started and is waiting on `waiting`."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                sent = yield waiting
            except BaseException as exc:  # a throw (a cancellation) goes on to the coroutine
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration:
                    return
