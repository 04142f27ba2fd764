"""The gateway's ASGI app: the route table's paths in, pipeline calls out.

Layers, outermost first: request id → response counter (the one place answers are counted, and
the last resort that keeps every answer OpenAI-shaped) → the front door, which sends the model
calls (POSTs the route table gives a shaper) down a short path (auth, shaper, pipeline) and
everything else (and the lifespan) to the FastAPI app, whose routes are the table's endpoints.
Everything stateful is built in the lifespan (`container.build_gateway`) and hangs off
`app.state.gateway`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestra.config import OrchestraConfig
from orchestra.loops import run_forever

from ..batch.service import BatchService
from ..container import Gateway, build_gateway
from ..metrics import GatewayMetrics
from .anthropic import as_anthropic
from .auth import AuthMiddleware
from .errors import GatewayError, install_error_handlers
from .middleware import RequestIdMiddleware, ResponseCounter
from .routes import RouteTable

log = logging.getLogger(__name__)

_RESTART_DELAY_S = 1.0  # a background loop that failed starts again after this long


class FrontDoor:
    """Model calls skip FastAPI's routing, exception and exit-stack layers, which cost more CPU
    per request than the proxying itself. They keep auth and the same error mapping: a
    GatewayError becomes its OpenAI-shaped body, anything else a logged 500 without details.
    Every other path, and the lifespan, go to the FastAPI app."""

    def __init__(self, app: FastAPI, table: RouteTable) -> None:
        self.app = app
        self._calls = table.model_calls
        self._fast: ASGIApp = AuthMiddleware(self._serve, table)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self._calls:
            scope["app"] = self.app  # what Starlette would set: auth reads app.state through it
            await self._fast(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw: Gateway = self.app.state.gateway
        request = Request(scope, receive)
        spec = self._calls[scope["path"]]
        shape = gw.shapers.json if spec.body == "json" else gw.shapers.multipart
        try:
            shaped = await shape(request)
            try:
                response = await gw.pipeline.serve(shaped.call)
            finally:
                shaped.close()  # an upload: the upstream has read it (it answered)
        except GatewayError as exc:
            response = exc.response()
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            response = GatewayError("internal gateway error").response()
        if spec.errors == "anthropic":
            response = as_anthropic(response)
        await response(scope, receive, send)


def create_app(config: OrchestraConfig) -> ASGIApp:
    table = RouteTable()
    table.check()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw_config = config.gateway
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=gw_config.max_connections_per_upstream,
            keepalive_timeout=gw_config.upstream_keepalive_s,
        )
        # No cookie jar: a Set-Cookie from one engine must never ride on other clients' calls.
        jar = aiohttp.DummyCookieJar()
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as session:
            gw = build_gateway(config, session)
            app.state.gateway = gw
            tasks = [
                asyncio.create_task(run_forever(name, loop, _RESTART_DELAY_S), name=name)
                for name, loop in gw.loops().items()
            ]
            app.state.batch = BatchService.start(gw, session) if config.batch.enabled else None
            try:
                yield
            finally:
                if app.state.batch is not None:
                    await app.state.batch.stop()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await gw.limiter.close()

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

    return RequestIdMiddleware(ResponseCounter(FrontDoor(app, table), metrics, table.counted))
