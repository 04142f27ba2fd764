"""The supervisor's admin line: a route's noted action, written by the middleware once answered,
with the status, an error's code, who, from where, the caller's request and trace ids; a call
refused by the token check has its line too, a route that notes nothing has none."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter

from orchestra.audit.lines import ADMIN, FIELDS
from orchestra.audit.writer import AuditLog
from orchestra.config import AuditConfig
from orchestra.protocol import error_dict
from orchestra.supervisor.audited import AuditedActions, noted

TRACE = "0af7651916cd43dd8448eb211c80319c"


class _Refused(Exception):
    pass


def _app(log: AuditLog) -> FastAPI:
    app = FastAPI()
    app.add_middleware(AuditedActions, state=app.state, who="admin_token")
    app.state.audit = log

    def authorized(request: Request) -> None:
        if request.headers.get("authorization") != "Bearer t":
            raise _Refused

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> JSONResponse:
        body = error_dict("a valid admin token is required", "auth", "invalid_admin_token")
        return JSONResponse(body, status_code=401)

    @app.post(
        "/models/{name:path}/load",
        dependencies=[Depends(noted("model.load")), Depends(authorized)],
    )
    async def load(name: str) -> dict[str, Any]:
        return {"name": name}

    @app.delete(
        "/models/{name:path}/adapters/{adapter}",
        dependencies=[Depends(noted("adapter.unload")), Depends(authorized)],
    )
    async def unload_adapter(name: str, adapter: str) -> dict[str, Any]:
        return {"name": name}

    @app.get("/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        return {}

    return app


async def _exercise(tmp_path: Path) -> list[dict[str, Any]]:
    trail = tmp_path / "audit.jsonl"
    dropped = Counter("dropped", "", registry=CollectorRegistry())
    log = AuditLog(AuditConfig(path=trail), dropped)
    transport = httpx.ASGITransport(app=_app(log), client=("10.1.2.3", 5000))
    token = {"authorization": "Bearer t"}
    async with httpx.AsyncClient(transport=transport, base_url="http://sup") as c:
        ids = {"x-request-id": "req-1", "traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}
        assert (await c.post("/models/org/m-1/load", headers={**token, **ids})).status_code == 200
        assert (await c.post("/models/m/load")).status_code == 401
        assert (await c.delete("/models/m/adapters/sql", headers=token)).status_code == 200
        assert (await c.get("/models", headers=token)).status_code == 200  # no action: no line
    await log.close()
    return [orjson.loads(line) for line in trail.read_bytes().splitlines()]


def test_each_noted_action_has_its_admin_line(tmp_path: Path) -> None:
    loaded, refused, unloaded = asyncio.run(_exercise(tmp_path))
    assert list(loaded) == ["time", "kind", *FIELDS[ADMIN]]
    assert loaded["kind"] == "admin" and loaded["who"] == "admin_token"
    assert (loaded["action"], loaded["target"], loaded["adapter"]) == (
        "model.load",
        "org/m-1",
        None,
    )
    assert (loaded["status"], loaded["error"], loaded["client"]) == (200, None, "10.1.2.3")
    assert (loaded["request_id"], loaded["trace_id"]) == ("req-1", TRACE)
    assert (loaded["method"], loaded["path"]) == ("POST", "/models/org/m-1/load")
    assert loaded["latency_ms"] >= 0
    # Refused by the token check, noted all the same: the note comes first.
    assert (refused["action"], refused["status"]) == ("model.load", 401)
    assert refused["error"] == "invalid_admin_token" and refused["request_id"] is None
    assert (unloaded["action"], unloaded["target"], unloaded["adapter"]) == (
        "adapter.unload",
        "m",
        "sql",
    )
    assert unloaded["method"] == "DELETE" and unloaded["trace_id"] is None
