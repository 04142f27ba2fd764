"""The gateway's own small routes: the model list, health and metrics.

`/v1/models` adds, for a loading model, how long it has been starting and how long its last
start took (the supervisor's `starting_for_s` and `last_startup_s`); and for every managed
model that is not ready, `expected_s`: the supervisor's cost model's expected wait for a
request now (the cheapest of waiting for a start, a wake or a cold start, from measured times;
supervisor/costs.py), null when nothing was measured yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request
from starlette.responses import Response

from orchestra.control import ControlError

if TYPE_CHECKING:
    from ..container import Gateway

_UNHEALTHY_STATES = frozenset({"down", "failed", "unknown", "backoff"})


async def list_models(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    table = await _supervisor_table(gw)
    starting = [r.name for r in gw.table.managed if r.state == "starting" and r.name in table]
    loading = {name: _eta(table[name]) for name in starting}
    data = [
        {
            "id": route.name,
            "object": "model",
            "created": gw.started,
            "owned_by": "orchestra",
            "state": route.state,
            "managed": route.managed,
            **({"loading": loading[route.name]} if route.name in loading else {}),
            **({"expected_s": table[route.name].get("expected_s")} if route.name in table else {}),
        }
        for route in gw.table.routes.values()
    ]
    data += gw.models.cards(gw.started)
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def health(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    models = {route.name: route.state for route in gw.table.routes.values()}
    degraded = any(state in _UNHEALTHY_STATES for state in models.values())
    body = {"status": "degraded" if degraded else "ok", "models": models}
    return Response(orjson.dumps(body), media_type="application/json")


async def metrics(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4")


async def _supervisor_table(gw: Gateway) -> dict[str, dict[str, Any]]:
    """The supervisor's entries of the managed models that are not ready (for `loading` of a
    starting one: {elapsed_s, expected_s, remaining_s}, expected from its last start, None when
    it never started; and `expected_s`). Asks the supervisor only when the routing table shows
    such a model; {} when it cannot be asked."""
    waiting = {r.name for r in gw.table.managed if r.state != "ready"}
    if not waiting or gw.link is None:
        return {}
    try:
        entries = await gw.link.client.table()
    except ControlError:
        return {}
    return {str(m.get("name")): m for m in entries if m.get("name") in waiting}


def _eta(model: dict[str, Any]) -> dict[str, float | None]:
    engines = [e for e in model.get("engines") or [] if e.get("starting_for_s") is not None]
    elapsed = max((float(e["starting_for_s"]) for e in engines), default=None)
    lasts = [float(e["last_startup_s"]) for e in engines if e.get("last_startup_s") is not None]
    expected = max(lasts) if lasts else None
    remaining = None
    if expected is not None and elapsed is not None:
        remaining = round(max(expected - elapsed, 0.0), 1)
    return {"elapsed_s": elapsed, "expected_s": expected, "remaining_s": remaining}
