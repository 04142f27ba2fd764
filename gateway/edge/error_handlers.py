"""FastAPI's exception handlers: every error of the non-model paths leaves OpenAI-shaped
(`core.errors`), a request that fails validation as a 400 naming the field, anything
unexpected as a logged 500 without details."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from orchestra.protocol import error_json

from ..core.errors import BadRequest, GatewayError

log = logging.getLogger(__name__)


def _response(error: GatewayError) -> Response:
    return Response(
        error.body(), error.status, headers=error.headers, media_type="application/json"
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> Response:
        return _response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _response(BadRequest(str(first.get("msg", "invalid request")), param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        body = error_json(str(exc.detail), type_, exc.status_code)
        return Response(body, exc.status_code, headers=exc.headers, media_type="application/json")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _response(GatewayError("internal gateway error"))
