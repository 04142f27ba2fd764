"""ASGI coroutines run from plain callbacks, without a task: `send_now` (a send) and
`Listener` (a loop over `receive`).

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

import asyncio
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any, cast

from starlette.types import Message, Receive, Send

log = logging.getLogger(__name__)


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


class Listener:
    """Awaits `receive()` over and over, stepped from the done-callbacks of what it waits on,
    and hands each message to `on_message` until that returns True or `cancel` is called.

    The stream relay listens for the client's disconnect this way for every stream: a task
    for it (created, registered, scheduled, cancelled, each stream) cost ~3% of the gateway's
    CPU at 256 paced streams (py-spy). A server's `receive` waits on asyncio futures (an
    event's); anything else it yields is stepped again on the next loop turn."""

    __slots__ = ("_coro", "_on_message", "_receive", "_waiting")

    def __init__(self, receive: Receive, on_message: Callable[[Message], bool]) -> None:
        self._receive = receive
        self._on_message = on_message
        self._coro: Coroutine[Any, Any, Message] | None = None
        self._waiting: asyncio.Future[Any] | None = None
        self._step(None)

    def _step(self, _: object) -> None:
        self._waiting = None
        while True:
            if self._coro is None:
                self._coro = cast(Coroutine[Any, Any, Message], self._receive())
            try:
                waiting = self._coro.send(None)
            except StopIteration as stop:
                self._coro = None
                if self._on_message(stop.value):
                    return
                continue  # the next message
            except (Exception, asyncio.CancelledError):  # as a task's would, it ends here:
                self._coro = None  # the stream it listens for runs (and settles) regardless
                log.debug("receive() failed; no longer listening", exc_info=True)
                return
            if asyncio.isfuture(waiting):
                waiting._asyncio_future_blocking = False  # as a task does, taking it over
                self._waiting = waiting
                waiting.add_done_callback(self._step)
            else:  # a bare yield (sleep(0)): again on the next turn of the loop
                asyncio.get_running_loop().call_soon(self._step, None)
            return

    def cancel(self) -> None:
        """Stop listening: the pending `receive()` is closed, as a cancelled task's would be."""
        if self._waiting is not None:
            self._waiting.remove_done_callback(self._step)
            self._waiting = None
        coro, self._coro = self._coro, None
        if coro is not None:
            coro.close()
