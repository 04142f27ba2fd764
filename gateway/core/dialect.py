"""The API dialects a model call speaks, and Anthropic's error shape.

A call's dialect comes from its route (`edge/routes.py`, `RouteSpec.dialect`) and travels with
it (`Call.dialect`): it decides how an error the gateway itself reports looks, as a whole reply
(`edge/anthropic.py`) and as a stream's last event (`core/sse.py`).

- `openai`: chat/completions and every other OpenAI-shaped path: `{"error": {"message", "type",
  "param", "code"}}`.
- `anthropic`: Anthropic's Messages API: `{"type": "error", "error": {"type", "message"}}`, its
  type named by the HTTP status (https://docs.anthropic.com/en/api/errors).
- `responses`: OpenAI's Responses API: OpenAI's error shape for a whole reply; a stream of its
  own named events.
"""

from __future__ import annotations

from typing import Any, Literal

Dialect = Literal["openai", "anthropic", "responses"]

_ANTHROPIC_TYPES = {
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


def anthropic_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def anthropic_error(message: str, status: int) -> dict[str, Any]:
    """Anthropic's error body (the `data` of its `error` event as well)."""
    return {"type": "error", "error": {"type": anthropic_type(status), "message": message}}
