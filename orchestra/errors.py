"""The errors the gateway and the supervisor raise for their APIs: one base and one table of
error kinds, so each hierarchy (`gateway/core/errors.py`, `supervisor/errors.py`) only names
its classes and the kind each answers with.

A kind is what an error reply says besides its message: the HTTP status, OpenAI's `type` and
the `code` (`{"error": {"message", "type", "param", "code"}}`, built by `orchestra.protocol`).
A class takes its kind as a class keyword (`class X(Base, kind=NOT_FOUND)`), which sets its
`status`, `type` and `code`; those stay plain class attributes, so a subclass may still
override one, and an instance may carry its own `code` (`code=` of the constructor).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .protocol import error_dict


@dataclass(frozen=True, slots=True)
class ErrorKind:
    status: int
    type: str
    code: str | None = None

    def coded(self, code: str) -> ErrorKind:
        """The same status and type under another code."""
        return replace(self, code=code)


# The kinds both APIs answer with (a bad request, a missing model, a bad token, an engine or
# upstream that cannot serve); a class names its own code with `coded`. A kind one class alone
# answers with stands at that class.
BAD_REQUEST = ErrorKind(400, "invalid_request_error")
UNAUTHORIZED = ErrorKind(401, "authentication_error")
NOT_FOUND = ErrorKind(404, "invalid_request_error", "not_found")
MODEL_NOT_FOUND = NOT_FOUND.coded("model_not_found")
UNAVAILABLE = ErrorKind(503, "service_unavailable")


class ApiError(Exception):
    """An error an API answers with: its kind, a message and the request field at fault."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init_subclass__(cls, kind: ErrorKind | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.status, cls.type, cls.code = kind.status, kind.type, kind.code

    def __init__(self, message: str, param: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def error(self) -> dict[str, Any]:
        """The error reply's body: `{"error": {...}}`."""
        return error_dict(self.message, self.type, self.code, self.param)
