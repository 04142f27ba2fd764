"""The model calls' path: one ASGI layer from the server's `scope` to the pipeline's answer.

Every other path goes through the stacked layers (`middleware.RequestIdMiddleware`,
`middleware.ResponseCounter`, `auth.AuthMiddleware`, FastAPI). A model call POST, the one path
that must be fast, does the same steps here in one frame, in this order:

1. the request id (`x-request-id` in, or a new one; `RequestIds` is shared with the middleware,
   so ids stay unique across both paths);
2. auth by the route table's entry (`auth.identify`: the same check as `AuthMiddleware`);
3. the shaper (`shapers.py`) and the pipeline; a GatewayError becomes its OpenAI-shaped body
   (Anthropic's on its paths), anything else a logged 500 without details, a cancellation
   before the answer (the server's shutdown deadline) a 503 with `Retry-After`;
4. the answer, with `x-request-id` added, counted once (`middleware.count_answer`) with the
   status the client saw, 499 when the client left before the last byte.

Why it is one layer: each stacked layer wrapped `send` in a closure and re-ran a header scan;
under load that was ~12% of the gateway's CPU (py-spy, `python -m bench --py-spy`). The
headers are read once (`auth.first_headers`), and a plain reply is sent with two raw `send`
calls instead of Starlette's `Response.__call__` (which does the same two sends).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..container import Gateway
from ..core.errors import GatewayError, Unavailable
from ..metrics import GatewayMetrics
from .anthropic import as_anthropic
from .auth import first_headers, identify
from .middleware import CLIENT_CLOSED, RequestIds, count_answer, internal, shutting_down
from .routes import RouteSpec
from .shapers import Incoming, Shapers

log = logging.getLogger(__name__)


class _Reply:
    """The client's side of one call: sends with `x-request-id` added and remembers what went
    out (the status, whether the last byte did) for the count."""

    __slots__ = ("_header", "_send", "ended", "status")

    def __init__(self, send: Send, header: tuple[bytes, bytes]) -> None:
        self._send = send
        self._header = header
        self.status = 0
        self.ended = False

    async def answer(self, response: Response, scope: Scope, receive: Receive) -> None:
        if type(response) is Response and response.background is None:
            # A whole reply (proxied JSON, an error): exactly the two messages Starlette's
            # Response.__call__ sends, without its wrapper. The header list is copied, not
            # appended to: a response object is the pipeline's, not ours to change.
            self.status = response.status_code
            headers = [*response.raw_headers, self._header]
            await self._send(
                {"type": "http.response.start", "status": self.status, "headers": headers}
            )
            await self._send({"type": "http.response.body", "body": response.body})
            self.ended = True
        else:  # a stream (relay, loading comments, an ensemble's merge): it sends itself
            await response(scope, receive, self.send)

    def send(self, message: Message) -> Awaitable[None]:
        """An ASGI send: it returns the server's own send (a plain function, not a coroutine
        around it: a relayed stream sends every chunk through here)."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), self._header]
        elif not message.get("more_body", False):
            self.ended = True
        return self._send(message)

    async def error(self, make: Callable[[], GatewayError], spec: RouteSpec) -> None:
        try:
            await self.answer(_shaped(make().response(), spec), {}, _nothing)
        except Exception:  # the client may be gone already
            log.debug("could not send the error answer", exc_info=True)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def _shaped(response: Response, spec: RouteSpec) -> Response:
    return as_anthropic(response) if spec.errors == "anthropic" else response


class ModelCalls:
    def __init__(
        self,
        app: FastAPI,
        calls: dict[str, RouteSpec],
        ids: RequestIds,
        metrics: Callable[[], GatewayMetrics | None],
    ) -> None:
        self._app = app  # its state holds the gateway, built in the app's lifespan
        self._calls = calls
        self._ids = ids
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A POST to one of `calls`' paths (the front door checked)."""
        started = time.perf_counter()
        spec = self._calls[scope["path"]]
        headers = first_headers(scope)
        request_id = self._ids.take(headers.get(b"x-request-id"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        reply = _Reply(send, (b"x-request-id", request_id.encode("latin-1")))
        try:
            response = await self._respond(scope, receive, spec, headers)
            if response is None:  # the client left while sending its body: counted as 499
                reply.status = CLIENT_CLOSED
            else:
                await reply.answer(response, scope, receive)
        except asyncio.CancelledError:
            if not reply.status:
                await reply.error(shutting_down, spec)
            raise
        except Exception:
            if reply.status:
                raise  # the response is on its way: the server closes the connection
            log.exception("unhandled error on POST %s", scope["path"])
            await reply.error(internal, spec)
        finally:
            count_answer(self._metrics(), state, reply.status, reply.ended, started)

    async def _respond(
        self, scope: Scope, receive: Receive, spec: RouteSpec, headers: dict[bytes, bytes]
    ) -> Response | None:
        """The answer to send; None when the client left while sending its body."""
        gw: Gateway | None = getattr(self._app.state, "gateway", None)
        if gw is None:  # before the lifespan built the gateway: nothing is served yet
            return Unavailable("the gateway is starting", headers={"retry-after": "1"}).response()
        try:
            identify(gw.keys, spec, scope, headers)
            shapers: Shapers = self._app.state.shapers  # built with the gateway, before it
            shape = shapers.json if spec.body == "json" else shapers.multipart
            shaped = await shape(Incoming(scope, receive, headers))
            try:
                response = await gw.pipeline.serve(shaped.call)
            finally:
                shaped.close()  # an upload: the upstream has read it (it answered)
        except GatewayError as exc:
            response = exc.response()
        except ClientDisconnect:
            return None  # counted as 499: nothing went out
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            response = GatewayError("internal gateway error").response()
        return _shaped(response, spec)
