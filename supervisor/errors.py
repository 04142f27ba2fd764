"""One error hierarchy for the supervisor; the API maps each to a status and an error body."""

from __future__ import annotations

from typing import Any

from orchestra.protocol import error_dict


class SupervisorError(Exception):
    status = 500
    type = "internal_error"
    code = "internal_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_dict(self.message, self.type, self.code, self.param)


class ModelNotFound(SupervisorError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class BadRequest(SupervisorError):
    status = 400
    type = "invalid_request_error"
    code = "bad_request"


class Unauthorized(SupervisorError):
    status = 401
    type = "authentication_error"
    code = "invalid_admin_token"


class EngineError(SupervisorError):
    """A start, sleep or wake that failed; the message says why (with the log tail)."""

    status = 503
    type = "service_unavailable"
    code = "engine_failed"


class NoCapacity(SupervisorError):
    """No GPUs / resident slots can be freed for the model right now."""

    status = 503
    type = "service_unavailable"
    code = "no_capacity"


class EnsureTimeout(SupervisorError):
    status = 504
    type = "timeout_error"
    code = "ensure_timeout"


class ShuttingDown(SupervisorError):
    """The supervisor began to shut down while the command was waiting (a swap, a drain)."""

    status = 503
    type = "service_unavailable"
    code = "shutting_down"
