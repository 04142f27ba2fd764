"""The FastAPI app: OpenAI routes in, proxied calls out. Everything stateful is built in the
lifespan and hangs off `app.state.gateway`; nothing lives at module level."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestra.config import OrchestraConfig
from orchestra.gateway.admin import install_admin_routes
from orchestra.gateway.admission import Admission
from orchestra.gateway.aliases import ModelMap
from orchestra.gateway.audio import install_audio_routes
from orchestra.gateway.auth import AuthMiddleware, KeyRing
from orchestra.gateway.control import ControlError, SupervisorClient
from orchestra.gateway.errors import (
    BadRequest,
    GatewayError,
    PayloadTooLarge,
    install_error_handlers,
)
from orchestra.gateway.fallback import OllamaClient
from orchestra.gateway.health import HealthMonitor
from orchestra.gateway.metrics import UNKNOWN_MODEL, GatewayMetrics
from orchestra.gateway.proxy import Proxy, UpstreamCall
from orchestra.gateway.ratelimit import RateLimiter
from orchestra.gateway.routing import Router, RoutingTable
from orchestra.gateway.workloads import EXTRA_PATHS, serve

log = logging.getLogger(__name__)

PROXIED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
PROXIED_PATHS |= EXTRA_PATHS  # vLLM's tokenize, rerank, score, pooling: by model, like chat
_UNHEALTHY_STATES = frozenset({"down", "failed", "unknown", "backoff"})


@dataclass
class Gateway:
    config: OrchestraConfig
    session: aiohttp.ClientSession
    metrics: GatewayMetrics
    table: RoutingTable
    router: Router
    health: HealthMonitor
    proxy: Proxy
    control: SupervisorClient | None
    keys: KeyRing
    limiter: RateLimiter
    admission: Admission
    fallback: OllamaClient | None
    models: ModelMap  # aliases, fallback chains, adapters, ensembles
    started: int = field(default_factory=lambda: int(time.time()))


def build_gateway(config: OrchestraConfig, session: aiohttp.ClientSession) -> Gateway:
    gw = config.gateway
    metrics = GatewayMetrics()
    table = RoutingTable(config)
    control = (
        SupervisorClient(config.supervisor_url, session, gw.timeouts.health_probe_s)
        if table.managed
        else None
    )
    health = HealthMonitor(
        table,
        session,
        metrics,
        cooldown_s=gw.unhealthy_cooldown_s,
        interval_s=gw.health_check_interval_s,
        probe_timeout_s=gw.timeouts.health_probe_s,
    )
    router = Router(table, control, metrics, gw.timeouts.ensure_s, on_ready=health.mark_up)
    return Gateway(
        config=config,
        session=session,
        metrics=metrics,
        table=table,
        router=router,
        health=health,
        proxy=Proxy(session, health, metrics, gw, reensure=router.reensure),
        control=control,
        keys=KeyRing(gw),
        limiter=RateLimiter(gw),
        admission=Admission(config),
        fallback=OllamaClient(config.fallback.ollama, session, metrics)
        if config.fallback.ollama is not None
        else None,
        models=ModelMap(config, metrics.registry),
    )


async def _sync_with_supervisor(gw: Gateway) -> None:
    assert gw.control is not None
    reachable = True
    while True:
        try:
            for status in await gw.control.list_models():
                gw.table.apply(status)
                gw.models.sync_adapters(status.name, status.adapters)
            if not reachable:
                log.info("supervisor at %s is reachable again", gw.control.base_url)
            reachable = True
        except ControlError as exc:
            if reachable:
                log.warning("cannot read the model table: %s", exc.message)
            reachable = False
            gw.table.supervisor_lost()
        await asyncio.sleep(gw.config.gateway.routing_refresh_s)


async def _report_demand(gw: Gateway) -> None:
    assert gw.control is not None
    while True:
        await asyncio.sleep(gw.config.gateway.demand_report_s)
        counts = gw.router.take_demand()
        try:
            await gw.control.report_demand(counts, gw.table.inflight())
        except ControlError:
            gw.router.demand.update(counts)  # keep them for the next report


async def _forever(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run a background loop; an unexpected error is logged and the loop restarted."""
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed; restarting it", name)
            await asyncio.sleep(1.0)


class RequestIdMiddleware:
    """Accepts `x-request-id` (or makes one), exposes it to handlers, returns it on every reply."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Unique per gateway process and cheap: a random 16-hex prefix and a 16-hex counter,
        # 32 hex digits like a uuid4 (a uuid4 per request cost ~2% of the CPU under load).
        self._prefix = uuid.uuid4().hex[:16]
        self._issued = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
                break
        if not request_id:
            self._issued += 1
            request_id = f"{self._prefix}{self._issued:016x}"
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _read_json_object(request: Request, limit: int) -> tuple[dict[str, Any], bytes]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    return payload, body


class FastProxyPaths:
    """The ASGI front door: POSTs to the proxied OpenAI paths skip FastAPI's routing, exception
    and exit-stack layers, which cost more CPU per request than the proxying itself.

    They keep the two middlewares that matter (request id, auth) and the same error mapping:
    a GatewayError becomes its OpenAI-shaped body, anything else a logged 500 without details.
    Every other path, and the lifespan, go to the FastAPI app unchanged.
    """

    def __init__(self, app: FastAPI, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = app
        self.state = app.state
        self._endpoint = endpoint
        self._fast: ASGIApp = RequestIdMiddleware(AuthMiddleware(self._serve))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in PROXIED_PATHS and scope["method"] == "POST":
            scope["app"] = self.app  # what Starlette would set: auth reads app.state through it
            await self._fast(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self._endpoint(request)
        except GatewayError as exc:
            response = exc.response()
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            response = GatewayError("internal gateway error").response()
        await response(scope, receive, send)


def create_app(config: OrchestraConfig) -> FastProxyPaths:
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
            loops = {"health": gw.health.run}
            if gw.control is not None:
                loops["supervisor-sync"] = lambda: _sync_with_supervisor(gw)
                loops["demand-report"] = lambda: _report_demand(gw)
            if gw.fallback is not None:
                loops["ollama-health"] = gw.fallback.run
            tasks = [asyncio.create_task(_forever(n, f), name=n) for n, f in loops.items()]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(title="Orchestra gateway", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware)  # inside RequestIdMiddleware: a 401 has an id too
    app.add_middleware(RequestIdMiddleware)

    async def proxied(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        label = UNKNOWN_MODEL  # metrics label: a configured model name, never a client string
        try:
            payload, body = await _read_json_object(request, gw.config.gateway.max_body_bytes)
            model = payload.get("model")
            if not isinstance(model, str) or not model:
                raise BadRequest("you must provide a `model` (a string)", param="model")
            if gw.table.get(model) is not None:
                label = model
            state = request.scope["state"]  # filled by RequestIdMiddleware and AuthMiddleware
            request_id: str = state["request_id"]
            headers = {"content-type": "application/json", "x-request-id": request_id}
            auth = request.headers.get("authorization")
            if auth and not gw.config.gateway.api_keys:
                headers["authorization"] = auth  # no gateway keys: the upstream may want its own
            key = state.get("api_key")
            limits = gw.limiter.admit(key, payload, len(body)) if key else {}
            call = UpstreamCall(
                path=request.scope["path"],
                body=body,
                model=model,
                stream=payload.get("stream") is True,
                headers=headers,
                reply_headers=limits,
                on_usage=(
                    functools.partial(gw.limiter.settle, key, payload, len(body)) if key else None
                ),
            )
            return await serve(gw, call, payload, request.headers.get(gw.admission.priority_header))
        except GatewayError as exc:
            # Refused before the proxy (bad body, unknown model, no upstream, overloaded): the
            # proxy counts the requests it forwards; these are counted here, exactly once.
            if not exc.counted:
                gw.metrics.requests.labels(label, str(exc.status)).inc()
            raise

    for path in sorted(PROXIED_PATHS):
        app.add_api_route(path, proxied, methods=["POST"], include_in_schema=True)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        data = [
            {
                "id": route.name,
                "object": "model",
                "created": gw.started,
                "owned_by": "orchestra",
                "state": route.state,
                "managed": route.managed,
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

    install_admin_routes(app)
    install_audio_routes(app)
    return FastProxyPaths(app, proxied)
