"""Admin routes of the usage side (admin key, `edge/routes.py`): the ledger (`/admin/usage`)
and the keys made at run time (`/admin/keys`). The CLI's `orchestra usage` and `orchestra keys`
call these."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import Request
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.responses import Response

from orchestra.audit.lines import note_action
from orchestra.config import Budget

from ..core.errors import BadRequest
from ..usage.query import report

if TYPE_CHECKING:
    from ..container import Gateway


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    budget: Budget | None = None
    team: str | None = None


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def usage(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    await gw.usage.ledger.flush()  # this worker's latest counts first
    q = request.query_params
    return _json(await report(gw.usage.store, q.get("since"), q.get("key"), q.get("model")))


async def list_keys(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return _json({"data": await gw.usage.keys.listing()})


async def create_key(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    try:
        new = NewKey.model_validate_json(await request.body())
    except ValidationError as exc:
        raise BadRequest(f"a new key is {{name, budget, team}}: {exc.errors()[0]['msg']}") from None
    note_action(request.scope, "key.create", new.name)
    secret = await gw.usage.keys.create(new.name, new.budget, new.team)
    # The secret, once: only its sha256 is kept.
    return _json({"name": new.name, "key": secret}, status=201)


async def disable_key(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    note_action(request.scope, "key.disable", request.path_params["name"])
    await gw.usage.keys.set_disabled(request.path_params["name"], True)
    return _json({"name": request.path_params["name"], "disabled": True})


async def enable_key(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    note_action(request.scope, "key.enable", request.path_params["name"])
    await gw.usage.keys.set_disabled(request.path_params["name"], False)
    return _json({"name": request.path_params["name"], "disabled": False})


async def delete_key(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    note_action(request.scope, "key.delete", request.path_params["name"])
    await gw.usage.keys.delete(request.path_params["name"])
    return _json({"name": request.path_params["name"], "deleted": True})
