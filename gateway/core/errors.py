"""One error hierarchy, one OpenAI-shaped body: `{"error": {"message", "type", "param", "code"}}`.

Every floor raises these; the edge maps every one of them (and anything unexpected) to a JSON
reply (`edge/error_handlers.py` for FastAPI's paths), so no traceback ever reaches a client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from orchestra.protocol import error_json

from .reply import JSON, Reply


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_json(self.message, self.type, self.code, self.param)

    def reply(self) -> Reply:
        return Reply(self.body(), self.status, dict(self.headers), JSON)


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "request_too_large"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.", param="model")


class Overloaded(GatewayError):
    """429 with `Retry-After` (whole seconds, at least 1), which the OpenAI SDK honours."""

    status = 429
    type = "rate_limit_error"
    code = "overloaded"

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


class Unavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "no_upstream_available"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class UpstreamError(GatewayError):
    """The upstream failed in a way that is not its own HTTP error (bad gateway)."""

    status = 502
    type = "upstream_error"
    code = "bad_gateway"
