"""OpenAI's shapes for the Files and Batches API: ids, the File and Batch objects, result lines.

Checked against the `openai` SDK's types (`types/batch.py`, `file_object.py`,
`batch_request_counts.py`, `batch_error.py`, `file_deleted.py`): every field the SDK requires
is always present, optional ones are null until they apply.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
_WINDOW = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def now() -> int:
    return int(time.time())


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def window_seconds(window: str) -> int | None:
    """'24h' -> 86400. OpenAI takes only '24h'; any `<n>s|m|h|d` is accepted here."""
    match = _WINDOW.match(window)
    if match is None or int(match.group(1)) == 0:
        return None
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def file_object(
    file_id: str, filename: str, purpose: str, size: int, created_at: int
) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": created_at,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def batch_object(
    batch_id: str,
    input_file_id: str,
    endpoint: str,
    window: str,
    metadata: dict[str, str] | None,
    created_at: int,
    expires_at: int,
) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": endpoint,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": window,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": created_at,
        "in_progress_at": None,
        "expires_at": expires_at,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": metadata,
        "model": None,
        "usage": None,
    }


def usage_object(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def response_line(custom_id: str, status: int, request_id: str, body: object) -> dict[str, Any]:
    """An output (2xx) or error-file (engine 4xx/5xx) line: the response as the engine sent it."""
    return {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }


def error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    """An error-file line for a row that got no response (expired, cancelled, unreachable)."""
    return {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
