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
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from orchestra.config import OrchestraConfig
from orchestra.protocol import parse_error

from ..cluster.routing import RoutingTable
from ..core import sse
from ..core.dialect import Dialect
from ..core.errors import GatewayError
from ..metrics import GatewayMetrics
from .inproc import Drain

log = logging.getLogger(__name__)

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


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
        work: Callable[[], Awaitable[Response]],
        reply_headers: dict[str, str],
        dialect: Dialect,
    ) -> Response:
        return LoadingStream(self, model, work, reply_headers, dialect)


class LoadingStream(Response):
    """Sends the 200 and loading comments while `work` (routing, the load, the proxied call)
    runs, then relays the response `work` produced, or ends with an error event."""

    def __init__(
        self,
        owner: LoadingComments,
        model: str,
        work: Callable[[], Awaitable[Response]],
        reply_headers: dict[str, str],
        dialect: Dialect,
    ) -> None:
        self.owner = owner
        self.model = model
        self.work = work
        self.dialect = dialect  # of the error event that ends a failed wait
        self.status_code = 200
        self.background = None
        latin = {k.lower().encode("latin-1"): v.encode("latin-1") for k, v in reply_headers.items()}
        self.raw_headers = [*_HEADERS, *latin.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        task = asyncio.ensure_future(self.work())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            while True:
                elapsed = time.monotonic() - started
                comment = sse.comment(f"loading {self.model}, {elapsed:.0f} s")
                await send({"type": "http.response.body", "body": comment, "more_body": True})
                done, _ = await asyncio.wait({task}, timeout=self.owner.interval_s)
                if done:
                    break
            try:
                response = task.result()
            except GatewayError as exc:
                last = sse.error_event(
                    self.dialect, exc.message, exc.type, exc.code, exc.param, status=exc.status
                )
            except Exception:
                log.exception("loading stream for %s failed", self.model)
                last = sse.error_event(
                    self.dialect, "internal gateway error", "server_error", status=500
                )
            else:
                if await _relay(response, receive, send, self.dialect):
                    return
                last = b""  # `_relay` sent it
            # The 200 is out: the failure is the stream's last event (counted as a cut stream).
            self.owner._metrics.stream_errors.labels(self.model).inc()
            if last:
                await _end(send, last)
        finally:
            if not task.done():
                task.cancel()  # the client left while waiting (the load itself goes on)
                await asyncio.gather(task, return_exceptions=True)


async def _end(send: Send, last: bytes) -> None:
    await send({"type": "http.response.body", "body": last, "more_body": False})


async def _relay(response: Response, receive: Receive, send: Send, dialect: Dialect) -> bool:
    """Play `response` into our already started stream: a 200 stream's bytes pass through
    (True); any other answer becomes one error event (False). The client's disconnect reaches
    the response (its upstream request is cancelled)."""
    drain = Drain(response, receive)
    try:
        status = drain.status
        if status != 200:
            error = parse_error(await drain.body())  # OpenAI's shape or Anthropic's
            if error is None:
                message = f"upstream answered HTTP {status}"
                last = sse.error_event(dialect, message, code=status, status=status)
            else:
                last = sse.error_event(
                    dialect, error.message, error.type, error.code, error.param, status=status
                )
            await _end(send, last)
            return False
        async for chunk in drain.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await _end(send, b"")
        return True
    finally:
        await drain.abort()
