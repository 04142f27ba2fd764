"""The gateway's ASGI app: the route table's paths in, pipeline calls out.

The front door sends the model calls (POSTs the route table gives a shaper) down one layer,
`calls.ModelCalls` (request id, auth, shaper, pipeline, counting), and everything else (and
the lifespan) down the stack: request id → response counter (counts the counted paths, and is
the last resort that keeps every answer OpenAI-shaped) → auth → the FastAPI app, whose routes
are the table's endpoints.
Everything stateful is built in the lifespan (`container.build_gateway`) and hangs off
`app.state.gateway`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable

import aiohttp
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestra.config import OrchestraConfig
from orchestra.loops import run_forever

from .batch.service import BatchService
from .container import Gateway, build_gateway
from .edge.auth import AuthMiddleware
from .edge.calls import ModelCalls
from .edge.error_handlers import install_error_handlers
from .edge.middleware import RequestIdMiddleware, RequestIds, ResponseCounter
from .edge.routes import RouteSpec, RouteTable
from .edge.shapers import Shapers
from .metrics import GatewayMetrics
from .upstream.http1.pool import Pool

log = logging.getLogger(__name__)

_RESTART_DELAY_S = 1.0  # a background loop that failed starts again after this long


class FrontDoor:
    """Model calls (the POSTs the route table gives a shaper) take `calls.ModelCalls`, one
    layer that does what the stacked ones do; every other path, and the lifespan, take the
    stack: request id, response counter, auth, the FastAPI app."""

    def __init__(
        self, app: FastAPI, calls: dict[str, RouteSpec], fast: ASGIApp, others: ASGIApp
    ) -> None:
        self.app = app  # the FastAPI app both paths end in (its state holds the gateway)
        self._calls = calls
        self._fast = fast
        self._others = others

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function returning the chosen layer's coroutine for the server to await, not
        # a coroutine awaiting it: one frame less that every resumption of the request's task
        # passes through. Safe: nothing runs after the layer. The server must be told this is
        # ASGI 3 (gateway/__main__.py: uvicorn guesses ASGI 2 for a non-async `__call__`).
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self._calls:
            return self._fast(scope, receive, send)
        return self._others(scope, receive, send)


def create_app(config: OrchestraConfig) -> ASGIApp:
    table = RouteTable()
    table.check()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw_config = config.gateway
        # The one client for everything sent to engines (`upstream.http1`): the model calls
        # and the side calls (probes, gauges, tokenize, stored-responses probe, Ollama).
        pool = Pool(
            gw_config.max_connections_per_upstream,
            gw_config.upstream_keepalive_s,
            gw_config.timeouts.connect_s,
        )
        # The control plane's client: the supervisors' `ControlClient`s (orchestra/control.py,
        # aiohttp, shared with the CLI), not the engines'. Kept alive below the supervisors'
        # (uvicorn's) 5 s, as the pool is below the engines'.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=gw_config.upstream_keepalive_s)
        # No cookie jar: a Set-Cookie from one supervisor must never ride on other calls.
        jar = aiohttp.DummyCookieJar()
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as session:
            gw = build_gateway(config, session, pool)
            # The edge's own part: HTTP request -> pipeline call (the gateway's parts below it
            # know nothing of HTTP requests).
            app.state.shapers = Shapers(
                gw_config, lambda name: gw.table.get(name) is not None, gw.admission.priority_header
            )
            app.state.gateway = gw
            tasks = [
                asyncio.create_task(run_forever(name, loop, _RESTART_DELAY_S), name=name)
                for name, loop in gw.loops().items()
            ]
            app.state.batch = BatchService.start(gw, pool) if config.batch.enabled else None
            try:
                yield
            finally:
                if app.state.batch is not None:
                    await app.state.batch.stop()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await gw.limiter.close()
                pool.close()

    # No /docs or /openapi.json: the app serves the route table's paths and nothing else.
    app = FastAPI(
        title="Orchestra gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware, table=table)
    for spec in table.routes:
        if spec.endpoint is None or (spec.console and not config.gateway.console.enabled):
            continue
        app.add_api_route(spec.path, spec.endpoint, methods=sorted(spec.methods))

    def metrics() -> GatewayMetrics | None:
        gw: Gateway | None = getattr(app.state, "gateway", None)
        return None if gw is None else gw.metrics

    ids = RequestIds()
    others = RequestIdMiddleware(ResponseCounter(app, metrics, table.counted), ids)
    return FrontDoor(
        app, table.model_calls, ModelCalls(app, table.model_calls, ids, metrics), others
    )
