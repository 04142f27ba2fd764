"""The console's routes. `/console*` is guarded by the admin key in `gateway.auth` (HTTP Basic
from a browser, or Bearer), or open to loopback clients only when no admin key is configured."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import orjson
from fastapi import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from orchestra.audit.lines import note_action
from orchestra.control import ControlError

from ..core.errors import BadRequest, GatewayError, ModelNotFound, NotFound, Unavailable
from ..usage.query import report
from .feed import ConsoleState
from .render import STATIC_TYPES, page_html, static_file

if TYPE_CHECKING:
    from ..container import Gateway

_NO_CACHE = {"cache-control": "no-store"}
ACTIONS = frozenset({"load", "unload", "sleep", "wake", "restart"})


def console_state(request: Request) -> ConsoleState:
    gw: Gateway = request.app.state.gateway
    state: ConsoleState | None = getattr(request.app.state, "console", None)
    if state is None or state.gw is not gw:
        state = request.app.state.console = ConsoleState(gw)
    return state


class _ActionFailed(GatewayError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, code="supervisor_error")
        self.status = status if status >= 400 else 502
        self.type = "invalid_request_error" if 400 <= status < 500 else "server_error"


async def page(request: Request) -> Response:
    state = console_state(request)
    snap = await state.snapshot()
    models = state.last_models
    html = page_html(models, snap["rates"], snap["swaps"], state.refresh_s, snap["notice"])
    return HTMLResponse(html, headers=_NO_CACHE)


async def static(name: str) -> Response:
    media = STATIC_TYPES.get(name)
    if media is None:
        raise NotFound(f"no console file `{name}`")  # only the known names are served
    body = await asyncio.to_thread(static_file, name)
    return Response(body, media_type=media, headers=_NO_CACHE)


async def snapshot(request: Request) -> Response:
    snap = await console_state(request).snapshot()
    return Response(orjson.dumps(snap), media_type="application/json", headers=_NO_CACHE)


async def series(request: Request) -> Response:
    """The charts: per model, per-second rates and TTFT p50/p95 per interval over the window,
    and the swap markers (`metrics_series.Series.snapshot`; this worker's answers)."""
    gw: Gateway = request.app.state.gateway
    return Response(
        orjson.dumps(gw.series.snapshot()), media_type="application/json", headers=_NO_CACHE
    )


async def usage(request: Request) -> Response:
    """The usage view's table: totals per key and model over the last 24 hours."""
    gw: Gateway = request.app.state.gateway
    await gw.usage.ledger.flush()  # this worker's latest counts first
    totals = (await report(gw.usage.store, "24h", None, None))["totals"]
    return Response(orjson.dumps(totals), media_type="application/json", headers=_NO_CACHE)


async def events(request: Request) -> Response:
    state = console_state(request)
    return StreamingResponse(
        state.events(request.is_disconnected),
        media_type="text/event-stream",
        headers={**_NO_CACHE, "x-accel-buffering": "no"},
    )


async def act(name: str, action: str, request: Request) -> Response:
    state = console_state(request)
    note_action(request.scope, f"model.{action}", name)  # its audit line's
    if action not in ACTIONS:
        raise BadRequest(f"unknown action `{action}`", param="action")
    if state.gw.table.get(name) is None:
        raise ModelNotFound(name)
    if state.supervisor is None:
        raise Unavailable("no supervisor manages this gateway's models")
    state.pending[name] = (action, time.monotonic())
    state.invalidate()
    try:
        info = await state.supervisor.action(name, action, state.action_timeout_s)
    except ControlError as exc:
        raise _ActionFailed(exc.status, exc.message) from None
    finally:
        state.pending.pop(name, None)
        state.invalidate()
    return Response(orjson.dumps(info), media_type="application/json")
