"""One error hierarchy for the supervisor; the API maps each to a status and an error body.

The base, and the kinds the supervisor shares with the gateway, are `orchestra/errors.py`'s.
"""

from __future__ import annotations

from orchestra.errors import (
    BAD_REQUEST,
    MODEL_NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    ApiError,
    ErrorKind,
)


class SupervisorError(ApiError, kind=ErrorKind(500, "internal_error", "internal_error")):
    pass


class ModelNotFound(SupervisorError, kind=MODEL_NOT_FOUND):
    pass


class BadRequest(SupervisorError, kind=BAD_REQUEST.coded("bad_request")):
    pass


class Unauthorized(SupervisorError, kind=UNAUTHORIZED.coded("invalid_admin_token")):
    pass


class EngineError(SupervisorError, kind=UNAVAILABLE.coded("engine_failed")):
    """A start, sleep or wake that failed; the message says why (with the log tail)."""


class NoCapacity(SupervisorError, kind=UNAVAILABLE.coded("no_capacity")):
    """No GPUs / resident slots can be freed for the model right now."""


class EnsureTimeout(SupervisorError, kind=ErrorKind(504, "timeout_error", "ensure_timeout")):
    pass


class ShuttingDown(SupervisorError, kind=UNAVAILABLE.coded("shutting_down")):
    """The supervisor began to shut down while the command was waiting (a swap, a drain)."""
