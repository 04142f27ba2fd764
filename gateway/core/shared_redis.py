"""One client of the state the gateway keeps in Redis (`gateway.redis_url`): the shared rate
limits, the shared budgets and the response cache each hold one, built the same way here.

Invariants:
- A request waits at most the config's `redis_timeout_s` on Redis: the client's socket and
  connect timeouts are that, and it never retries inside (a failed call is the caller's to
  fall back from at once).
- Writes made off the request path (`background`: a settle, a stored answer) are held until
  they end, so none is collected mid-flight, and `close` waits for them up to `drain_s`; a
  failed one marks Redis unreachable like a failed call on the request path.
- An outage is logged once when it starts and once when Redis answers again, not per call.

Import it only when `redis_url` is set: it needs the `redis` extra.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

ERRORS = (RedisError, OSError)  # what a call to an unreachable or failing Redis raises


class SharedRedis:
    def __init__(self, url: str, timeout_s: float, what: str, away: str) -> None:
        """`what` is kept in Redis (e.g. "rate limits"); `away` says what happens in this
        worker while Redis cannot be reached (e.g. "rate limits are per worker"), for the
        log."""
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # a failed call falls back at once (module doc)
        )
        self._what = what
        self._away = away
        self._pending: set[asyncio.Task[None]] = set()
        self._reachable = True

    def script(self, source: str) -> AsyncScript:
        """A Lua script, sent by its SHA (loaded again by the client if Redis lost it)."""
        return self.client.register_script(source)

    def background(self, work: Awaitable[object]) -> None:
        """Run `work` (a Redis call) off the request path; its failure is an outage."""
        task = asyncio.ensure_future(self._guarded(work))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _guarded(self, work: Awaitable[object]) -> None:
        try:
            await work
        except ERRORS as exc:
            self.lost(exc)
        else:
            self.back()

    def lost(self, exc: BaseException) -> None:
        if self._reachable:
            log.warning("redis unreachable (%r): %s until it is back", exc, self._away)
        self._reachable = False

    def back(self) -> None:
        if not self._reachable:
            log.info("redis is back: %s are shared again", self._what)
        self._reachable = True

    async def close(self, drain_s: float) -> None:
        """The background writes waited for (at most `drain_s`), then the client closed."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=drain_s)
        left = set(self._pending)  # still waiting on Redis past the drain: given up
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await self.client.aclose()
