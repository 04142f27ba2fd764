"""One error hierarchy, one OpenAI-shaped body: `{"error": {"message", "type", "param", "code"}}`.

Every floor raises these; the edge maps every one of them (and anything unexpected) to a JSON
reply (`edge/error_handlers.py` for FastAPI's paths), so no traceback ever reaches a client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from orchestra.errors import (
    BAD_REQUEST,
    MODEL_NOT_FOUND,
    NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    ApiError,
    ErrorKind,
)
from orchestra.protocol import error_json

from .reply import JSON, Reply


class GatewayError(ApiError, kind=ErrorKind(500, "server_error")):
    """The gateway's errors: the shared base's (`orchestra/errors.py`), with the reply's
    headers and the reply itself."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, param, code=code)
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_json(self.message, self.type, self.code, self.param)

    def reply(self) -> Reply:
        return Reply(self.body(), self.status, dict(self.headers), JSON)


class BadRequest(GatewayError, kind=BAD_REQUEST):
    pass


class PayloadTooLarge(BadRequest, kind=ErrorKind(413, BAD_REQUEST.type, "request_too_large")):
    pass


class Unauthorized(GatewayError, kind=UNAUTHORIZED.coded("invalid_api_key")):
    pass


class NotFound(GatewayError, kind=NOT_FOUND):
    pass


class ModelNotFound(NotFound, kind=MODEL_NOT_FOUND):
    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.", param="model")


class Overloaded(GatewayError, kind=ErrorKind(429, "rate_limit_error", "overloaded")):
    """429 with `Retry-After` (whole seconds, at least 1), which the OpenAI SDK honours."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float = 1.0,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        retry = {"retry-after": str(max(1, math.ceil(retry_after_s)))}
        super().__init__(message, code=code, headers={**retry, **(headers or {})})


class Unavailable(GatewayError, kind=UNAVAILABLE.coded("no_upstream_available")):
    pass


class UpstreamTimeout(GatewayError, kind=ErrorKind(504, "timeout", "upstream_timeout")):
    pass


class UpstreamError(GatewayError, kind=ErrorKind(502, "upstream_error", "bad_gateway")):
    """The upstream failed in a way that is not its own HTTP error (bad gateway)."""
