"""`/v1/audio/transcriptions` and `/v1/audio/translations`: multipart, routed by the form's
`model` like any model (aliases, fallback chains, ensure, admission, retries).

The upload is spooled (memory up to `gateway.uploads.spool_bytes`, then a temporary file) and
refused with 413 past `gateway.uploads.max_bytes`; it is re-sent unchanged, except for the
`model` value when an alias or a chain sends it to another model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from starlette.responses import Response

from ..pipeline.call import Call
from .errors import BadRequest
from .multipart import SpooledBody, read_upload

if TYPE_CHECKING:
    from ..container import Gateway

AUDIO_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations"})


async def audio(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    limits = gw.config.gateway.uploads
    upload = await read_upload(
        request.stream(),
        request.headers.get("content-type", ""),
        request.headers.get("content-length"),
        limits.max_bytes,
        limits.spool_bytes,
    )
    try:
        model = upload.fields.get("model")
        if not model:
            raise BadRequest("you must provide a `model` form field", param="model")
        state = request.scope["state"]
        if gw.table.get(model) is not None:
            state["model"] = model  # the metrics label (a configured name only)
        request_id: str = state["request_id"]
        headers = {
            "content-type": request.headers["content-type"],
            "x-request-id": request_id,
        }
        auth = request.headers.get("authorization")
        if auth and not gw.config.gateway.api_keys:
            headers["authorization"] = auth
        payload = {"model": model}
        key = state.get("api_key")
        limit_headers = gw.limiter.admit(key, payload, upload.size) if key else {}
        call = Call(
            path=request.scope["path"],
            body=SpooledBody(upload),
            model=model,
            stream=upload.fields.get("stream", "").lower() == "true",
            headers=headers,
            reply_headers=limit_headers,
        )
        priority = request.headers.get(gw.admission.priority_header)
        return await gw.workloads.serve(call, payload, priority)
    finally:
        # The upstream has answered (first byte) by now, so it has read the whole body.
        upload.close()


def install_audio_routes(app: FastAPI) -> None:
    for path in sorted(AUDIO_PATHS):
        app.add_api_route(path, audio, methods=["POST"], include_in_schema=True)
