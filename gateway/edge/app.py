"""The gateway's ASGI app: OpenAI routes in, proxied calls out.

Layers, outermost first: request id → response counter (the one place answers are counted) →
the front door, which sends POSTs to the proxied paths down a short path (auth, dispatch) and
everything else (and the lifespan) to the FastAPI app. Everything stateful is built in the
lifespan (`container.build_gateway`) and hangs off `app.state.gateway`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestra.config import OrchestraConfig

from ..batch.routes import install_batch_routes
from ..batch.service import BatchService
from ..console import install_console
from ..container import Gateway, build_gateway, run_forever
from ..metrics import GatewayMetrics
from ..pipeline.loading import loading_info
from ..pipeline.workloads import EXTRA_PATHS
from .admin import install_admin_routes
from .audio import AUDIO_PATHS, install_audio_routes
from .auth import AuthMiddleware
from .errors import GatewayError, install_error_handlers
from .middleware import RequestIdMiddleware, ResponseCounter

log = logging.getLogger(__name__)

PROXIED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
PROXIED_PATHS |= EXTRA_PATHS  # vLLM's tokenize, rerank, score, pooling: by model, like chat
_UNHEALTHY_STATES = frozenset({"down", "failed", "unknown", "backoff"})


class FrontDoor:
    """POSTs to the proxied OpenAI paths skip FastAPI's routing, exception and exit-stack
    layers, which cost more CPU per request than the proxying itself. They keep auth and the
    same error mapping: a GatewayError becomes its OpenAI-shaped body, anything else a logged
    500 without details. Every other path, and the lifespan, go to the FastAPI app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._fast: ASGIApp = AuthMiddleware(self._serve)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in PROXIED_PATHS and scope["method"] == "POST":
            scope["app"] = self.app  # what Starlette would set: auth reads app.state through it
            await self._fast(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw: Gateway = self.app.state.gateway
        try:
            response = await gw.dispatcher.handle(Request(scope, receive))
        except GatewayError as exc:
            response = exc.response()
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            response = GatewayError("internal gateway error").response()
        await response(scope, receive, send)


def create_app(config: OrchestraConfig) -> ASGIApp:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw_config = config.gateway
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=gw_config.max_connections_per_upstream,
            keepalive_timeout=gw_config.upstream_keepalive_s,
        )
        async with aiohttp.ClientSession(connector=connector) as session:
            gw = build_gateway(config, session)
            app.state.gateway = gw
            tasks = [
                asyncio.create_task(run_forever(name, loop), name=name)
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

    app = FastAPI(title="Orchestra gateway", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware)
    _install_routes(app)
    install_admin_routes(app)
    install_audio_routes(app)
    if config.gateway.console.enabled:
        install_console(app)
    install_batch_routes(app)

    def metrics() -> GatewayMetrics | None:
        gw: Gateway | None = getattr(app.state, "gateway", None)
        return None if gw is None else gw.metrics

    counted = PROXIED_PATHS | AUDIO_PATHS
    return RequestIdMiddleware(ResponseCounter(FrontDoor(app), metrics, counted))


def _install_routes(app: FastAPI) -> None:
    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        loading = await loading_info(gw)  # a starting model: elapsed, expected, remaining
        data = [
            {
                "id": route.name,
                "object": "model",
                "created": gw.started,
                "owned_by": "orchestra",
                "state": route.state,
                "managed": route.managed,
                **({"loading": loading[route.name]} if route.name in loading else {}),
            }
            for route in gw.table.routes.values()
        ]
        data += gw.models.cards(gw.started)
        return Response(
            orjson.dumps({"object": "list", "data": data}), media_type="application/json"
        )

    @app.get("/health")
    async def health(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        models = {route.name: route.state for route in gw.table.routes.values()}
        degraded = any(state in _UNHEALTHY_STATES for state in models.values())
        body = {"status": "degraded" if degraded else "ok", "models": models}
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4")
