"""Anthropic's error shape, for the paths that speak Anthropic's Messages API.

On those paths (the route table's `errors="anthropic"`) an error the gateway itself answers —
auth, an unknown model, limits, no engine — leaves as `{"type": "error", "error": {"type",
"message"}}` with the same status, which is what the `anthropic` SDK parses. An engine's own
error (vLLM's Anthropic router already answers in this shape) passes through unchanged.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response, StreamingResponse

from orchestra.protocol import parse_error

# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


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
    shaped = {
        "type": "error",
        "error": {"type": error_type(response.status_code), "message": error.message},
    }
    headers = {
        k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
    }
    return Response(
        orjson.dumps(shaped), response.status_code, headers=headers, media_type="application/json"
    )
