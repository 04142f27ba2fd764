"""What the gateway, the supervisor and their clients say to each other on the wire.

The one error shape both processes send (OpenAI's: `{"error": {"message", "type", "param",
"code"}}`) and the one reader of it. The control API's requests and replies join it here.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ValidationError


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorReply(BaseModel):
    error: ErrorDetail


def error_dict(
    message: str, type_: str, code: str | int | None, param: str | None = None
) -> dict[str, Any]:
    """The error shape as a dict (to embed in a larger reply, or for a JSON response)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_json(message: str, type_: str, code: str | int | None, param: str | None = None) -> bytes:
    """The error shape as JSON bytes: the body of every error response."""
    return orjson.dumps(error_dict(message, type_, code, param))


def parse_error(raw: bytes | str | dict[str, Any] | None) -> ErrorDetail | None:
    """The error in an OpenAI-shaped reply (bytes, text or parsed JSON), or None if it is not
    one. `message` and `type` may be missing upstream (vLLM sends them; others may not)."""
    payload: object = raw
    if isinstance(raw, bytes | str):
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), dict):
        return None
    error = payload["error"]
    try:
        return ErrorDetail(
            message=str(error.get("message", "")),
            type=str(error.get("type") or "upstream_error"),
            param=error.get("param") if isinstance(error.get("param"), str) else None,
            code=error.get("code") if isinstance(error.get("code"), str | int) else None,
        )
    except ValidationError:
        return None
