"""The supervisor's audit lines: one `admin` line per control-API action (a model's load,
unload, sleep, wake and restart, an adapter loaded or unloaded: `orchestra load|...`,
`orchestra adapters`, and the same calls made by anyone else), in the gateway's audit trail.

Where: `gateway.audit`, the gateway's own file (a relative path: from this process's working
directory, the one `orchestra up` starts both in). The supervisor runs on the gateway's machine
and appends under the same `PATH.lock` (`orchestra/audit/files.py`), so the two processes'
lines never interleave and either may rotate. Off when `gateway.audit` is absent.

How: a route names its action with `noted(action)`, a dependency listed before the admin token's
check, so a refused call (401) has its line too; `AuditedActions`, an ASGI middleware, writes
the line once the answer is sent (its status, an error's code read from the body's first
bytes). Who: `admin_token` when the supervisor has one (the status says whether the caller had
it), else `loopback` (without a token the control API binds loopback only). From where: the
client's address. The request id is the caller's `x-request-id`, the trace id its
`traceparent`'s, when sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from prometheus_client import Counter
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestra.audit.lines import ACTION, ADMIN, note_action
from orchestra.audit.writer import AuditLog
from orchestra.config import AuditConfig
from orchestra.loops import run_forever

_ERROR_BYTES = 4096  # an error body's first bytes: enough for its code
_MAX_HEADER = 128  # a caller's request id or traceparent, cut
_RESTART_DELAY_S = 1.0  # the writer loop, restarted after a failure


def noted(action: str) -> Callable[[Request], None]:
    """A route's dependency naming its action; the target is the path's model (and adapter)."""

    def note(request: Request) -> None:
        params = request.path_params
        note_action(request.scope, action, params.get("name"), params.get("adapter"))

    return note


@asynccontextmanager
async def audit_trail(
    config: AuditConfig | None, dropped: Counter
) -> AsyncIterator[AuditLog | None]:
    """The supervisor's audit log and its writer task while the app runs (None: off); the
    last lines written at the end."""
    if config is None:
        yield None
        return
    log = AuditLog(config, dropped)
    writer = asyncio.create_task(run_forever("audit-writer", log.run, _RESTART_DELAY_S))
    try:
        yield log
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await log.close()


class AuditedActions:
    """ASGI middleware: an admin line for each answered request whose route noted an action.
    `state`: the app's, whose `audit` the lifespan sets (absent before it, and when off)."""

    def __init__(self, app: ASGIApp, state: State, who: str) -> None:
        self.app = app
        self._state = state
        self._who = who

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        log: AuditLog | None = getattr(self._state, "audit", None)
        if scope["type"] != "http" or log is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raised before its answer
        error = bytearray()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                error.extend(message.get("body", b"")[: _ERROR_BYTES - len(error)])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            noted = scope.get("state", {}).get(ACTION)
            if noted is not None:
                log.emit(ADMIN, self._values(scope, noted, status, bytes(error), started))

    def _values(
        self, scope: Scope, noted: Any, status: int, error: bytes, started: float
    ) -> tuple[Any, ...]:
        """The line's values, in `orchestra.audit.lines.FIELDS[ADMIN]`'s order."""
        action, target, adapter = noted
        client = scope.get("client")
        headers = dict(scope.get("headers") or ())
        request_id = headers.get(b"x-request-id")
        return (
            request_id.decode("latin-1")[:_MAX_HEADER] if request_id else None,
            _trace_id(headers.get(b"traceparent")),
            self._who,
            client[0] if client else None,
            scope["method"],
            scope["path"],
            action,
            target,
            status,
            error or None,
            (time.perf_counter() - started) * 1000,
            adapter,
        )


def _trace_id(traceparent: bytes | None) -> str | None:
    """W3C trace context: `version-traceid-parentid-flags`; the trace id, if well formed."""
    if not traceparent:
        return None
    parts = traceparent.decode("latin-1")[:_MAX_HEADER].split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1].lower()
    return None
