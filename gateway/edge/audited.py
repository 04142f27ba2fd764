"""The edge's audit lines (`gateway.audit`, written by gateway/audit/): one per answered request
of a route with API keys (model calls, the Files and Batches API, `/v1/models`), and one per
admin action (an admin route's POST or DELETE: the console's model actions, the keys made at
run time). Reads of the gateway's own paths (`/health`, `/metrics`) and the admin routes' reads
are not audited: they are polled, and change nothing.

What a line says is read from what the answer left behind: the scope's state (the request id,
the key found by auth, the call and its usage tab, a trace id when tracing set one, the action
an admin endpoint noted) and the `Outgoing` (status, the reply's headers, an error's body). The
values go to the log as a plain tuple in `audit.lines.FIELDS`' order: the request path builds
no dict and formats nothing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

from orchestra.audit.lines import ACTION, ADMIN, REQUEST

from ..core.call import REPLICA, SERVED_BY, Call
from ..pipeline.cache import HEADER as CACHE_HEADER
from ..upstream.backend import BACKEND_HEADER
from .count import client_status
from .outgoing import Outgoing
from .routes import Caller, RouteSpec

if TYPE_CHECKING:
    from ..container import Gateway

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def audit_answer(
    gw: Gateway | None, scope: Scope, spec: RouteSpec | None, out: Outgoing, started: float
) -> None:
    """The answer's line, if it is one the audit keeps (none before the lifespan built it)."""
    # `spec` is the path's policy (its first entry): any of its methods, a 405 too, is audited.
    if gw is None or gw.audit is None or spec is None:
        return
    method: str = scope["method"]
    if spec.caller is Caller.OPEN or (spec.caller is Caller.ADMIN and method in _READS):
        return
    state: dict[str, Any] = scope.get("state", {})
    status = client_status(out.status, out.ended)
    client = scope.get("client")
    host = client[0] if client else None
    elapsed_ms = (time.perf_counter() - started) * 1000
    if spec.caller is Caller.ADMIN:
        action, target, adapter = state.get(ACTION) or (None, None, None)
        who = "admin_key" if gw.keys.admin_sha256 is not None else "loopback"
        done = (
            state.get("request_id"),
            state.get("trace_id"),
            who,
            host,
            method,
            scope["path"],
            action,
            target,
            status,
            out.error,
            elapsed_ms,
            adapter,
        )
        gw.audit.emit(ADMIN, done)
        return
    reply = out.reply
    headers = reply.headers if reply is not None else {}
    call: Call | None = state.get("call")
    asked = call.payload.get("model") if call is not None else state.get("model")
    tab: Any = state.get("tab")  # usage.accounts.Tab
    used = tab is not None and bool(tab.served)  # a reply reported its usage
    api_key = state.get("api_key")
    values = (
        state.get("request_id"),
        state.get("trace_id"),
        api_key.name if api_key is not None else None,
        host,
        method,
        scope["path"],
        asked if isinstance(asked, str) else None,
        headers.get(SERVED_BY),
        headers.get(REPLICA),
        headers.get(BACKEND_HEADER),
        status,
        out.error,
        tab.prompt if used else None,
        tab.completion if used else None,
        elapsed_ms,
        (out.head_at - started) * 1000 if out.head_at else None,
        call.stream if call is not None else None,
        headers.get(CACHE_HEADER),
        call.marks.attempts if call is not None else None,
        call.marks.fallback if call is not None else None,
    )
    request_body = call.body if call is not None and isinstance(call.body, bytes) else None
    reply_body = reply.body if reply is not None and isinstance(reply.body, bytes) else None
    gw.audit.emit(REQUEST, values, request_body, reply_body)
