"""Errors in OpenAI's shape (orchestra/protocol.py), raised anywhere, answered by one handler."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from orchestra.errors import ApiError as _SharedError
from orchestra.protocol import error_json


class ApiError(_SharedError):
    """The shared API error (orchestra/errors.py) with its kind given per raise: this engine
    answers many statuses from one place (the form's checks, the transcriber's failures)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param, code=code)
        self.status, self.type = status, type_
        self.headers = headers or {}

    def response(self) -> Response:
        return Response(
            error_json(self.message, self.type, self.code, self.param),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )


def bad_request(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


async def handle(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def not_found(request: Request, _: Exception) -> Response:
    """Starlette's 404/405 for an unknown path, in OpenAI's shape."""
    return ApiError(
        404, f"no route {request.method} {request.url.path}", "invalid_request_error", "not_found"
    ).response()
