"""The one edge: a single ASGI layer, built from the route table, that every HTTP request passes.

For every path, in this order:
1. the request id (`x-request-id` in, or a new one from `RequestIds`), sent back on every reply;
2. the route table's entry for the path (`RouteTable.lookup`): a path not in the table goes on
   to FastAPI, which answers its OpenAI-shaped 404/405;
3. auth by the entry's caller (`auth.identify`): an API key, the admin key, or open; the key
   found rides in the scope's state (the shaper puts it on the call, the pipeline charges it);
4. the answer: a model call (a POST the table gives a shaper) is shaped into a call and served
   by the pipeline here, its reply (`core.reply.Reply`) written to the client by
   `outgoing.Outgoing`, the one place a reply becomes ASGI messages; every other entry is
   FastAPI's endpoint, FastAPI being the innermost app;
5. the last resort: an error before the response started leaves as its JSON error in the
   path's dialect (Anthropic's on `/v1/messages*`), anything unexpected as a logged 500
   without details, a cancellation (the server's shutdown deadline) as a 503 with
   `Retry-After`;
6. counting: an entry that reaches a model is counted once (`count.count_answer`) with the
   status the client saw, 499 when the client left before the last byte; with
   `gateway.audit`, the answer's audit line (`audited.audit_answer`);
7. with `tracing:` on, an entry that reaches a model is one server span (`traced.py`), from
   before step 3 until after its last byte, joined to the client's `traceparent`.

The lifespan (and any scope that is not HTTP) goes straight to FastAPI. Everything the edge
needs from the gateway's parts is built in the app's lifespan and read from the app's state
(`gateway`, `shapers`); until then every guarded path answers 503 "starting".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from orchestra.tracing import Tracing

from ..container import Gateway
from ..core.errors import GatewayError, Unavailable
from ..core.reply import Reply
from ..metrics import GatewayMetrics
from .anthropic import as_anthropic
from .audited import audit_answer
from .auth import first_headers, identify
from .count import (
    CLIENT_CLOSED,
    RequestIds,
    client_status,
    count_answer,
    internal,
    open_tab,
    shutting_down,
)
from .outgoing import Outgoing
from .routes import Caller, RouteSpec, RouteTable
from .shapers import Incoming, Shapers
from .traced import RequestTrace

log = logging.getLogger(__name__)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


async def _error(out: Outgoing, error: GatewayError, spec: RouteSpec | None) -> None:
    try:
        await out.answer(_shaped(error.reply(), spec), _nothing)
    except Exception:  # the client may be gone already
        log.debug("could not send the error answer", exc_info=True)


def _shaped(reply: Reply, spec: RouteSpec | None) -> Reply:
    return as_anthropic(reply) if spec is not None and spec.dialect == "anthropic" else reply


class Edge:
    def __init__(
        self,
        app: FastAPI,
        table: RouteTable,
        ids: RequestIds,
        metrics: Callable[[], GatewayMetrics | None],  # None before the lifespan built them
        # `tracing:` on: the lifespan's Tracing (None before it is built). None: tracing off,
        # and the edge does not look for it.
        tracing: Callable[[], Tracing | None] | None = None,
    ) -> None:
        self.app = app  # the innermost app (FastAPI); its state holds what the lifespan built
        self._table = table
        self._ids = ids
        self._metrics = metrics
        self._tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        spec = self._table.lookup(scope["method"], scope["path"])
        headers = first_headers(scope)
        request_id = self._ids.take(headers.get(b"x-request-id"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        out = Outgoing(send, (b"x-request-id", request_id.encode("latin-1")))
        trace = None
        if self._tracing is not None and spec is not None and spec.reaches_model:
            trace = RequestTrace.start(self._tracing(), scope, spec.path, headers, started)
        try:
            await self._serve(scope, receive, spec, headers, out, trace)
        except asyncio.CancelledError:
            if not out.status:
                await _error(out, shutting_down(), spec)
            raise
        except Exception:
            if out.status:
                raise  # the response is on its way: the server closes the connection
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await _error(out, internal(), spec)
        finally:
            if spec is not None and spec.reaches_model and scope["method"] in spec.methods:
                count_answer(self._metrics(), state, out.status, out.ended, started)
            if trace is not None:
                trace.end(client_status(out.status, out.ended))
            audit_answer(getattr(self.app.state, "gateway", None), scope, spec, out, started)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        spec: RouteSpec | None,
        headers: dict[bytes, bytes],
        out: Outgoing,
        trace: RequestTrace | None,
    ) -> None:
        if spec is None:  # not a path of the table: FastAPI's 404 or 405
            await self.app(scope, receive, out.send)
            return
        gw: Gateway | None = getattr(self.app.state, "gateway", None)
        if gw is None and spec.caller is not Caller.OPEN:
            await _error(out, _starting(), spec)
            return
        try:
            if gw is not None and spec.caller is not Caller.OPEN:
                identify(gw.keys, spec, scope, headers)
            if not (spec.model_call and scope["method"] == "POST"):
                await self.app(scope, receive, out.send)
                return
            assert gw is not None
            answer = await self._model_call(gw, spec, scope, receive, headers, trace)
        except GatewayError as exc:
            if spec.browser_prompt and exc.status == 401:  # let the browser ask for the key
                exc.headers["www-authenticate"] = 'Basic realm="Orchestra console"'
            await _error(out, exc, spec)
            return
        if answer is None:  # the client left while sending its body: counted as 499
            out.status = CLIENT_CLOSED
            return
        await out.answer(_shaped(answer, spec), receive)

    async def _model_call(
        self,
        gw: Gateway,
        spec: RouteSpec,
        scope: Scope,
        receive: Receive,
        headers: dict[bytes, bytes],
        trace: RequestTrace | None,
    ) -> Reply | None:
        """The pipeline's answer to a model call; None when the client left while sending its
        body. Its GatewayErrors propagate to the caller's handler."""
        shapers: Shapers = self.app.state.shapers  # built in the lifespan with the gateway
        shape = shapers.json if spec.body == "json" else shapers.multipart
        try:
            shaped = await shape(Incoming(scope, receive, headers, spec.traits))
            call = shaped.call
            if trace is not None:
                trace.called(call)
            try:
                await open_tab(gw, call, scope["state"])  # usage ledger, budgets (429)
                reply = await gw.pipeline.serve(call)
                if trace is not None:
                    trace.answered(reply)
                return reply
            finally:
                shaped.close()  # an upload: the upstream has read it (it answered)
        except ClientDisconnect:  # while its body was read (an upload: while it was sent on)
            return None


def _starting() -> GatewayError:
    return Unavailable("the gateway is starting", headers={"retry-after": "1"})
