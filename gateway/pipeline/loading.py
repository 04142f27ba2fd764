"""A visible swap: SSE comments while a streamed request waits for its model to load.

With `loading_comments` on (gateway-wide or per model), a streamed request for a managed model
with no ready replica is answered at once: 200, `text/event-stream`, then `: loading MODEL, N s`
comment lines every `loading_comment_interval_s` (OpenAI clients ignore comments; proxies see
bytes and keep the connection). When the model is ready the request goes on as usual and its
stream follows. The status is committed before the load is done, so a load (or anything else
before the first byte) that fails ends the stream with one error event instead of a retryable
503, in the call's dialect (`core/sse.py`). Non-streamed requests are never answered this way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from orchestra.config import OrchestraConfig
from orchestra.protocol import parse_error

from ..cluster.routing import RoutingTable
from ..core import sse
from ..core.dialect import Dialect
from ..core.errors import GatewayError
from ..core.reply import SSE, IterStream, Reply
from ..metrics import GatewayMetrics

log = logging.getLogger(__name__)

_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class LoadingComments:
    """Which requests get loading comments, and the stream that sends them."""

    def __init__(self, config: OrchestraConfig, table: RoutingTable, metrics: GatewayMetrics):
        default = config.gateway.loading_comments
        self.models = frozenset(
            s.name
            for s in config.all_servers
            if (default if s.loading_comments is None else s.loading_comments)
        )
        self.interval_s = config.gateway.loading_comment_interval_s
        self._table = table
        self._metrics = metrics

    def wants(self, model: str, stream: bool) -> bool:
        """A streamed request to a managed model with comments on and no ready replica (it
        will wait for a load)."""
        if not stream or model not in self.models:
            return False
        route = self._table.get(model)
        return route is not None and route.managed and not route.serving

    def stream(
        self,
        model: str,
        work: Callable[[], Awaitable[Reply]],
        reply_headers: dict[str, str],
        dialect: Dialect,
    ) -> Reply:
        """The 200 at once; its body sends loading comments while `work` (routing, the load,
        the proxied call) runs, then the reply `work` produced, or ends with an error event in
        `dialect`."""
        body = IterStream(self._comments_then(model, work, dialect))
        return Reply(body, 200, {**_HEADERS, **reply_headers}, f"{SSE}; charset=utf-8")

    async def _comments_then(
        self, model: str, work: Callable[[], Awaitable[Reply]], dialect: Dialect
    ) -> AsyncIterator[bytes]:
        started = time.monotonic()
        task = asyncio.ensure_future(work())
        try:
            while True:
                elapsed = time.monotonic() - started
                yield sse.comment(f"loading {model}, {elapsed:.0f} s")
                done, _ = await asyncio.wait({task}, timeout=self.interval_s)
                if done:
                    break
            try:
                reply = task.result()
            except GatewayError as exc:
                last = sse.error_event(
                    dialect, exc.message, exc.type, exc.code, exc.param, status=exc.status
                )
            except Exception:
                log.exception("loading stream for %s failed", model)
                last = sse.error_event(
                    dialect, "internal gateway error", "server_error", status=500
                )
            else:
                try:
                    if reply.status == 200:  # its bytes pass through
                        async for chunk in reply.chunks():
                            yield chunk
                        return
                    last = _error_event(reply.status, await reply.read(), dialect)
                finally:
                    await reply.aclose()  # the client left, or the stream ended: settled once
            # The 200 is out: the failure is the stream's last event (counted as a cut stream).
            self._metrics.stream_errors.labels(model).inc()
            yield last
        finally:
            if not task.done():
                task.cancel()  # the client left while waiting (the load itself goes on)
            (result,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(result, Reply):
                await result.aclose()  # closed above already, or arrived as the client left


def _error_event(status: int, body: bytes, dialect: Dialect) -> bytes:
    """Another answer than a 200 stream, as one error event (OpenAI's shape or Anthropic's
    read from its body)."""
    error = parse_error(body)
    if error is None:
        return sse.error_event(
            dialect, f"upstream answered HTTP {status}", code=status, status=status
        )
    return sse.error_event(
        dialect, error.message, error.type, error.code, error.param, status=status
    )
