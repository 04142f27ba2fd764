"""The Responses API's calls about a stored response: retrieve and cancel.

They name no model: the pipeline finds the engine that stored the response
(`pipeline/responses.py`) and sends the call there alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from ..core.call import new_call
from .outgoing import AsResponse

if TYPE_CHECKING:
    from ..container import Gateway


async def retrieve(request: Request, response_id: str) -> AsResponse:
    """`GET /v1/responses/{id}` (with `?stream=true&starting_after=N`: the events again)."""
    return await _about(request, response_id, "GET", f"/v1/responses/{response_id}")


async def cancel(request: Request, response_id: str) -> AsResponse:
    """`POST /v1/responses/{id}/cancel`: a background response stops."""
    return await _about(request, response_id, "POST", f"/v1/responses/{response_id}/cancel")


async def _about(request: Request, response_id: str, method: str, path: str) -> AsResponse:
    gw: Gateway = request.app.state.gateway
    state = request.scope["state"]
    query = request.url.query
    call = new_call(
        f"{path}?{query}" if query else path,
        b"",
        {},
        "",
        request_id=state["request_id"],
        stream=request.query_params.get("stream", "").lower() == "true",
        authorization=request.headers.get("authorization"),
        api_key=state.get("api_key"),
        method=method,
        response_id=response_id,
    )
    return AsResponse(await gw.pipeline.serve(call))
