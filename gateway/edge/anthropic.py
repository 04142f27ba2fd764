"""Anthropic's error shape, for the paths that speak Anthropic's Messages API.

On those paths (the route table's `Traits(dialect="anthropic")`) an error the gateway itself
answers — auth, an unknown model, limits, no engine — leaves as `{"type": "error", "error": {"type",
"message"}}` with the same status, which is what the `anthropic` SDK parses. An engine's own
error (vLLM's Anthropic router already answers in this shape) passes through unchanged. The
shape and its types are `core/dialect.py`'s (a stream's last event uses them too).
"""

from __future__ import annotations

import orjson
from starlette.responses import Response, StreamingResponse

from orchestra.protocol import parse_error

from ..core.dialect import anthropic_error


def as_anthropic(response: Response) -> Response:
    """`response` in Anthropic's shape when it is an OpenAI-shaped error; else unchanged."""
    if response.status_code < 400 or isinstance(response, StreamingResponse):
        return response
    body = bytes(response.body)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return response
    if isinstance(payload, dict) and payload.get("type") == "error":
        return response  # already Anthropic's (the engine's own)
    error = parse_error(payload)
    if error is None:
        return response
    shaped = anthropic_error(error.message, response.status_code)
    headers = {
        k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
    }
    return Response(
        orjson.dumps(shaped), response.status_code, headers=headers, media_type="application/json"
    )
