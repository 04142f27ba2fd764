"""The stacked ASGI layers of every path but the model calls (`calls.py` does their steps in one
layer): a request id, and counting answers.

`count_answer` is the only writer of `orchestra_requests_total` and
`orchestra_request_duration_seconds`, called once per answer by `calls.ModelCalls` (model calls)
and by `ResponseCounter` (the other counted paths). Both record the status of
`http.response.start` once the response has ended, so every answer is counted once with the
status the client saw — a 401 from auth, a 404 for an unknown model, an upstream's 503, an Ollama
fallback's 200 alike. A response the client left before its last byte counts as 499. The model
label comes from `scope["state"]["model"]` (set by the shaper, edge/shapers.py, once the body is
read, always a configured name) and is `_unknown` before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.errors import GatewayError, Unavailable
from ..metrics import UNKNOWN_MODEL, GatewayMetrics

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's code: the client went away before the response ended


class RequestIds:
    """The request ids of one gateway process: the client's `x-request-id` (up to 128
    characters), or a new one. Shared by the model-call path (`calls.py`) and
    `RequestIdMiddleware`, so ids stay unique across both."""

    def __init__(self) -> None:
        # Unique per gateway process and cheap: a random 16-hex prefix and a 16-hex counter,
        # 32 hex digits like a uuid4 (a uuid4 per request cost ~2% of the CPU under load).
        self._prefix = uuid.uuid4().hex[:16]
        self._issued = 0

    def take(self, given: bytes | None) -> str:
        if given:
            request_id = given.decode("latin-1")[:128]
            if request_id:
                return request_id
        self._issued += 1
        return f"{self._prefix}{self._issued:016x}"


class RequestIdMiddleware:
    """Accepts `x-request-id` (or makes one), exposes it to handlers, returns it on every reply."""

    def __init__(self, app: ASGIApp, ids: RequestIds) -> None:
        self.app = app
        self._ids = ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                given = value
                break
        request_id = self._ids.take(given)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ResponseCounter:
    """Counts every response on the counted paths once (see the module docstring), and is the
    last resort for every path: nothing ends in the server's plain-text 500. An exception
    before the response started becomes an OpenAI-shaped 500; a cancellation before it (the
    server's shutdown deadline) an OpenAI-shaped 503 with `Retry-After`."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Callable[[], GatewayMetrics | None],  # None before the lifespan built them
        paths: Collection[str],
        method: str = "POST",
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._paths = paths
        self._method = method

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = scope["method"] == self._method and scope["path"] in self._paths
        started = time.perf_counter()
        status = 0
        ended = False

        async def counting_send(message: Message) -> None:
            nonlocal status, ended
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body" and not message.get("more_body", False):
                ended = True
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except asyncio.CancelledError:
            if not status:
                await _answer(scope, receive, counting_send, shutting_down)
            raise
        except Exception:
            if status:
                raise  # the response is on its way: the server closes the connection
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await _answer(scope, receive, counting_send, internal)
        finally:
            if counted:
                count_answer(self._metrics(), scope.get("state", {}), status, ended, started)


def count_answer(
    metrics: GatewayMetrics | None,
    state: dict[str, object],
    status: int,
    ended: bool,
    started: float,
) -> None:
    """One answer counted: `status` as the client saw it (0: nothing went out, a 500), a 499
    when the client left before the last byte; the model label from the scope's state."""
    if metrics is None:
        return
    if not status:
        status = 500  # the app failed before answering and so did the answer
    elif not ended:
        status = CLIENT_CLOSED
    model = state.get("model") or UNKNOWN_MODEL
    bound = metrics.model(str(model))
    bound.requests(status).inc()
    bound.request_seconds.observe(time.perf_counter() - started)


def shutting_down() -> GatewayError:
    return Unavailable(
        "the gateway is shutting down; retry on another instance or shortly",
        code="shutting_down",
        headers={"retry-after": "1"},
    )


def internal() -> GatewayError:
    return GatewayError("internal gateway error")


async def _answer(
    scope: Scope, receive: Receive, send: Send, error: Callable[[], GatewayError]
) -> None:
    with contextlib.suppress(Exception):  # the client may be gone already
        await error().response()(scope, receive, send)
