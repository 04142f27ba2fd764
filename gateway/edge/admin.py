"""Admin routes (`/admin/*`, guarded by the admin key in `gateway.auth`): a state snapshot,
and the runtime figures (tasks, gc objects, each bounded map against its cap:
`orchestra/runtime.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import Request
from starlette.responses import Response

from orchestra.runtime import figures

if TYPE_CHECKING:
    from ..container import Gateway


async def status(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    models = {
        route.name: {
            "state": route.state,
            "replicas": [
                {
                    "url": r.url,
                    "healthy": r.healthy,
                    "outstanding": r.outstanding,
                    "down_reason": r.down_reason,
                }
                for r in route.replicas
            ],
        }
        for route in gw.table.routes.values()
    }
    admission = {
        name: {"inflight": g.inflight, "queued": g.queued, "max_inflight": g.max_inflight}
        for name, g in gw.admission.gates.items()
    }
    fallback = (
        None if gw.fallback is None else {"url": gw.fallback.url, "healthy": gw.fallback.healthy}
    )
    nodes = {n.name: n.snapshot() for n in gw.link.nodes} if gw.link else {}
    body = {"models": models, "admission": admission, "fallback": fallback, "nodes": nodes}
    return Response(orjson.dumps(body), media_type="application/json")


async def runtime(request: Request) -> Response:
    """This worker's figures (each worker holds its own maps; the soak runs one)."""
    gw: Gateway = request.app.state.gateway
    return Response(orjson.dumps(figures(gw.maps())), media_type="application/json")
