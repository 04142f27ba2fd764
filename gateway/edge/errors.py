"""One error hierarchy, one OpenAI-shaped body: `{"error": {"message", "type", "param", "code"}}`.

Handlers raise these; `install_error_handlers` maps every one of them (and anything unexpected)
to a JSON response, so no traceback ever reaches a client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from orchestra.protocol import error_json

log = logging.getLogger(__name__)


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

    def response(self) -> Response:
        return Response(
            self.body(),
            status_code=self.status,
            headers=self.headers,
            media_type="application/json",
        )


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return BadRequest(str(first.get("msg", "invalid request")), param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        body = error_json(str(exc.detail), type_, exc.status_code)
        return Response(body, exc.status_code, headers=exc.headers, media_type="application/json")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return GatewayError("internal gateway error").response()
