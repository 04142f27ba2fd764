"""The control API (FastAPI). Everything is built in `create_app`'s lifespan; no globals.

Requests and replies are the types of `orchestra.protocol`, sent as their JSON (`_reply`); errors
share its one shape, `{"error": {"message", "type", "param", "code"}}`. With `admin_token` set,
every route but /health needs `Authorization: Bearer <token>`; with `gateway.audit`, each model
or adapter action leaves an admin line (`audited.py`).
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestra.audit.lines import note_action
from orchestra.config import OrchestraConfig
from orchestra.protocol import (
    AdapterSpec,
    AdaptersReply,
    GatewayReport,
    GpuHolder,
    GpuTable,
    Health,
    LogsReply,
    ModelTable,
    SyncReply,
    error_dict,
)
from orchestra.runtime import Bounded, figures
from orchestra.trace_context import joined
from orchestra.tracing import start_tracing

from .adapters import ADAPTER_CALL_TIMEOUT_S, Adapters, adapter_names
from .audited import AuditedActions, audit_trail, noted
from .errors import ModelNotFound, SupervisorError, Unauthorized
from .gpus import detect_gpus
from .logtail import read_since
from .manager import Manager
from .model import Model
from .procgroup import ProcessGroups
from .service_discovery import sd_router

_FOLLOW_MAX_BYTES = 1 << 20  # one follow read; the client asks again from the new offset
Timeout = Annotated[float | None, Query(gt=0, description="seconds; default from config")]
Force = Annotated[bool, Query(description="evict even models with requests in flight")]


def create_app(config: OrchestraConfig, gpus: list[int] | None = None) -> FastAPI:
    """The supervisor app; `gpus` overrides detection (tests, planning on a given layout)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        host_gpus = (
            gpus if gpus is not None else await asyncio.to_thread(detect_gpus, config.supervisor)
        )
        groups = ProcessGroups(
            config.supervisor.state_dir,
            uuid.uuid4().hex,
            config.engine.stop_timeout_s,
            reaper=config.supervisor.on_supervisor_exit == "kill",
        )
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        # The swaps' spans (`tracing:`), exported until the supervisor stops.
        tracing = start_tracing(config.tracing, "orchestra-supervisor")
        async with aiohttp.ClientSession(connector=connector) as session:
            manager = Manager(config, host_gpus, session, groups, tracing)
            app.state.manager = manager
            app.state.adapters = Adapters(session, ADAPTER_CALL_TIMEOUT_S)
            await manager.start()
            try:
                async with audit_trail(config.gateway.audit, manager.metrics.audit_dropped) as log:
                    app.state.audit = log  # `AuditedActions` writes its lines here
                    yield
            finally:
                await manager.close(keep_engines=app.state.keep_engines)
                await tracing.aclose()

    app = FastAPI(title="Orchestra supervisor", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.keep_engines = False  # set by SIGUSR1 (`__main__`): exit leaving engines serving
    who = "admin_token" if config.supervisor.admin_token else "loopback"
    app.add_middleware(AuditedActions, state=app.state, who=who)
    _install_errors(app)
    _install_routes(app, config)
    return app


def begin_close(app: FastAPI) -> None:
    """The server's graceful shutdown begins: commands still waiting answer 503 at once
    (`Closing.until`), so it waits for no swap, drain or load in progress."""
    manager: Manager | None = getattr(app.state, "manager", None)
    if manager is not None:
        manager.closing.begin()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _manager(request: Request) -> Manager:
    manager: Manager = request.app.state.manager
    return manager


def _adapters(request: Request) -> Adapters:
    adapters: Adapters = request.app.state.adapters
    return adapters


Mgr = Annotated[Manager, Depends(_manager)]
Lora = Annotated[Adapters, Depends(_adapters)]


def _reply(body: BaseModel) -> Response:
    """A reply as its wire JSON (not re-validated against a narrower response model)."""
    return Response(body.model_dump_json(), media_type="application/json")


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(SupervisorError)
    async def supervisor_error(request: Request, exc: SupervisorError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.error(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{loc}: {first.get('msg', 'invalid request')}"
        body = error_dict(message, "invalid_request_error", "bad_request", loc or None)
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = error_dict(str(exc.detail), "http_error", str(exc.status_code))
        return JSONResponse(body, status_code=exc.status_code)


def _install_routes(app: FastAPI, config: OrchestraConfig) -> None:
    token = config.supervisor.admin_token
    default_timeout = config.supervisor.ensure_timeout_s

    def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
            raise Unauthorized("a valid admin token is required (Authorization: Bearer ...)")

    auth = [Depends(authorized)]

    def acting(action: str) -> list[Any]:
        """An action's route: noted for its audit line (first: a refused call has one too)."""
        return [Depends(noted(action)), *auth]

    @app.get("/health")
    async def health() -> Response:
        return _reply(Health(status="ok"))

    @app.get("/models", dependencies=auth)
    async def models(m: Mgr) -> Response:
        return _reply(ModelTable(models=m.table()))

    @app.get("/gpus", dependencies=auth)
    async def gpus(m: Mgr) -> Response:
        holders = {g: e.id for mod in m.models.values() for e in mod.holding() for g in e.gpus}
        return _reply(GpuTable(gpus=[GpuHolder(index=g, engine=holders.get(g)) for g in m.gpus]))

    @app.get("/models/{name:path}/logs", dependencies=auth)
    async def logs(
        name: str,
        m: Mgr,
        lines: Annotated[int, Query(ge=0, le=100_000)] = 100,
        replica: int = 0,
        since: Annotated[int | None, Query(ge=0, description="byte offset: follow")] = None,
    ) -> Response:
        """The last `lines` lines; with `since` (a previous reply's `offset`), those after it."""
        path = m.log_path(name, replica)
        if since is None:
            offset = _size(path)  # before the read: a line written meanwhile shows twice, not never
            text = m.logs(name, lines, replica)
        else:
            text, offset = read_since(path, since, _FOLLOW_MAX_BYTES)
        return _reply(LogsReply(name=name, lines=text, offset=offset))

    # Commands wait (a swap, a drain) but not past the start of a shutdown: `closing.until`. An
    # ensure or load for a traced request carries its `traceparent`: its swap joins that trace.
    @app.post("/models/{name:path}/ensure", dependencies=auth)
    async def ensure(
        request: Request, name: str, m: Mgr, timeout_s: Timeout = None, force: Force = False
    ) -> Response:
        with joined(request.headers):
            await m.closing.until(m.ensure(name, timeout_s or default_timeout, force=force))
        return _reply(m.info(name))

    @app.post("/models/{name:path}/load", dependencies=acting("model.load"))
    async def load(
        request: Request, name: str, m: Mgr, timeout_s: Timeout = None, force: Force = False
    ) -> Response:
        timeout = timeout_s or default_timeout
        with joined(request.headers):
            await m.closing.until(m.ensure(name, timeout, force=force, reset=True))
        return _reply(m.info(name))

    @app.post("/models/{name:path}/unload", dependencies=acting("model.unload"))
    async def unload(name: str, m: Mgr) -> Response:
        await m.closing.until(m.unload(name))
        return _reply(m.info(name))

    @app.post("/models/{name:path}/sleep", dependencies=acting("model.sleep"))
    async def sleep(name: str, m: Mgr) -> Response:
        await m.closing.until(m.sleep(name))
        return _reply(m.info(name))

    @app.post("/models/{name:path}/wake", dependencies=acting("model.wake"))
    async def wake(name: str, m: Mgr, timeout_s: Timeout = None) -> Response:
        await m.closing.until(m.wake(name, timeout_s or default_timeout))
        return _reply(m.info(name))

    @app.post("/models/{name:path}/restart", dependencies=acting("model.restart"))
    async def restart(name: str, m: Mgr, timeout_s: Timeout = None) -> Response:
        await m.closing.until(m.restart(name, timeout_s or default_timeout))
        return _reply(m.info(name))

    @app.post("/models/{name:path}/adapters", dependencies=acting("adapter.load"))
    async def load_adapter(
        name: str, spec: AdapterSpec, m: Mgr, lora: Lora, request: Request
    ) -> Response:
        note_action(request.scope, "adapter.load", name, spec.name)  # the body names it
        model = _managed(m, name)
        await m.closing.until(lora.load(model, spec.name, spec.path))
        return _reply(AdaptersReply(name=name, adapters=adapter_names(model)))

    @app.delete("/models/{name:path}/adapters/{adapter}", dependencies=acting("adapter.unload"))
    async def unload_adapter(name: str, adapter: str, m: Mgr, lora: Lora) -> Response:
        model = _managed(m, name)
        await m.closing.until(lora.unload(model, adapter))
        return _reply(AdaptersReply(name=name, adapters=adapter_names(model)))

    @app.get("/models/{name:path}", dependencies=auth)
    async def model(name: str, m: Mgr) -> Response:
        return _reply(m.info(name))

    @app.post("/gateways/{gateway_id}/sync", dependencies=auth)
    async def sync(gateway_id: str, m: Mgr, report: GatewayReport) -> Response:
        """A gateway's report (demand, in-flight per engine, drains it has seen); the table."""
        return _reply(SyncReply(models=m.sync(gateway_id, report), node=m.node_load()))

    @app.post("/shutdown/begin", dependencies=auth)
    async def shutdown_begin(m: Mgr) -> Response:
        """The supervisor is about to be stopped (`orchestra up` says so before it stops the
        gateway): waiting commands answer 503 now, so the gateway's drain is not held by loads
        that would never finish; engines keep serving its requests in flight."""
        m.closing.begin()
        return _reply(Health(status="closing"))

    @app.get("/admin/runtime", dependencies=auth)
    async def runtime(m: Mgr) -> Response:
        """Tasks, gc objects and the bounded maps against their caps (`orchestra/runtime.py`)."""
        # The maps keyed by what gateways report, with their caps; the rest are keyed by
        # configured models and engines only.
        maps = {
            "demand.events": m.demand.bounded(len(m.models)),
            "gateways.reports": m.reports.bounded(),
            "swaps.running": Bounded(len(m.swaps.tasks()), len(m.models)),
            "scaling.growing": Bounded(len(m.scaler.tasks()), len(m.models)),
        }
        return Response(orjson.dumps(figures(maps)), media_type="application/json")

    @app.get("/metrics", dependencies=auth)
    async def metrics(m: Mgr) -> Response:
        return Response(generate_latest(m.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def table() -> list[dict[str, object]]:
        return [entry.model_dump() for entry in app.state.manager.table()]

    app.include_router(sd_router(table), dependencies=auth)


def _managed(m: Manager, name: str) -> Model:
    model = m.models.get(name)
    if model is None:
        raise ModelNotFound(f"no managed model `{name}`")
    return model
