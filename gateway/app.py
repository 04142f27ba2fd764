"""The gateway's ASGI app: the one edge (`edge/edge.py`: request id, auth, the model calls'
pipeline, counting, the last resort) over the FastAPI app, whose routes are the route table's
endpoints. Everything stateful is built in the lifespan (`container.build_gateway`, and the
edge's shapers) and hangs off the FastAPI app's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from fastapi import FastAPI
from starlette.types import ASGIApp

from orchestra.config import OrchestraConfig
from orchestra.loops import run_forever
from orchestra.tracing import Tracing, start_tracing

from .batch.service import BatchService
from .container import Gateway, build_gateway
from .edge.count import RequestIds
from .edge.edge import Edge
from .edge.error_handlers import install_error_handlers
from .edge.routes import RouteTable
from .edge.shapers import Shapers
from .metrics import GatewayMetrics
from .upstream.http1.pool import Pool

log = logging.getLogger(__name__)

_RESTART_DELAY_S = 1.0  # a background loop that failed starts again after this long


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
            tracing = start_tracing(config.tracing)  # exports until the lifespan ends
            gw = build_gateway(config, session, pool, tracing)
            # The edge's own part: HTTP request -> pipeline call (the gateway's parts below it
            # know nothing of HTTP requests).
            app.state.shapers = Shapers(
                gw_config, lambda name: gw.table.get(name) is not None, gw.admission.priority_header
            )
            app.state.gateway = gw
            await gw.usage.start()  # the ledger's tables, run-time keys, budgets' spend
            tasks = [
                asyncio.create_task(run_forever(name, loop, _RESTART_DELAY_S), name=name)
                for name, loop in gw.loops().items()
            ]
            app.state.batch = (
                BatchService.start(gw, pool, table.batch_endpoints())
                if config.batch.enabled
                else None
            )
            try:
                yield
            finally:
                if app.state.batch is not None:
                    await app.state.batch.stop()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await gw.limiter.close()
                if gw.cache is not None:
                    await gw.cache.store.close()  # Redis's: the last answers stored
                await gw.usage.close()  # the ledger's last counts written
                if gw.audit is not None:
                    await gw.audit.close()  # the last lines written
                pool.close()
                await tracing.aclose()  # the spans still queued are sent

    # No /docs or /openapi.json: the app serves the route table's paths and nothing else.
    app = FastAPI(
        title="Orchestra gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    for spec in table.routes:
        if spec.endpoint is None or (spec.console and not config.gateway.console.enabled):
            continue
        app.add_api_route(spec.path, spec.endpoint, methods=sorted(spec.methods))

    def metrics() -> GatewayMetrics | None:
        gw: Gateway | None = getattr(app.state, "gateway", None)
        return None if gw is None else gw.metrics

    def current_tracing() -> Tracing | None:
        gw: Gateway | None = getattr(app.state, "gateway", None)
        return None if gw is None else gw.tracing

    # Tracing off: the edge is given nothing to look up (no per-request cost).
    return Edge(
        app, table, RequestIds(), metrics, None if config.tracing is None else current_tracing
    )
