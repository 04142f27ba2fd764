"""The audit lines' shape: one JSON object per line, built here and nowhere else.

Three kinds, all with `time` (UTC, ISO 8601, ms), `kind`, `request_id`, `trace_id` (the
request's trace when tracing put one in the scope's state, else null), `status` and `error`
(the error's `code`, or its type when it has none):
- `request`: an HTTP request to a route with API keys: the key's name (never the key),
  the client's address, method, path, the model asked and the model and engine that served,
  the backend, tokens, latency and (streams) time to the response's head, and the marks the reply
  carries: `cache` (`x-orchestra-cache`: hit, miss, bypass) and `fallback` (Ollama served);
- `admin`: an admin action (a model's load/unload/sleep/wake/restart, a key made, disabled,
  enabled or deleted): who (the admin key, or a loopback caller while none is configured), from
  where, the action and its target;
- `batch_row`: one row of a batch, charged to the key that submitted it.

A line never holds a key's secret: only names. Bodies only with `gateway.audit.capture_bodies`.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

import orjson

from orchestra.protocol import parse_error

OLLAMA = "ollama"  # the Ollama backend's name in `x-orchestra-backend`
CLIENT_CLOSED = 499  # the edge's status for a client that left before the last byte
_MAX_FIELD = 256  # client-sent strings (the model asked, a path) are cut to this


Line = dict[str, Any]

ACTION = "audit_action"  # the scope's state: (action, target) an admin endpoint noted


def note_action(scope: MutableMapping[str, Any], action: str, target: str | None) -> None:
    """An admin endpoint names what it does (`key.create`, `model.load`) and to what, for the
    line the edge writes when it has answered."""
    scope.setdefault("state", {})[ACTION] = (action, target)


def request_line(
    *,
    request_id: str | None,
    trace_id: str | None,
    key: str | None,
    client: str | None,
    method: str,
    path: str,
    model: str | None,
    served_by: str | None,
    replica: str | None,
    backend: str | None,
    cache: str | None,
    status: int,
    error_body: bytes | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    latency_s: float,
    ttft_s: float | None,
    stream: bool | None,
) -> Line:
    return {
        "time": time.time(),
        "kind": "request",
        "request_id": request_id,
        "trace_id": trace_id,
        "key": key,
        "client": client,
        "method": method,
        "path": path[:_MAX_FIELD],
        "model": model[:_MAX_FIELD] if model else model,
        "served_by": served_by,
        "replica": replica,
        "backend": backend,
        "status": status,
        "error": error_body if status >= 400 else None,  # its code, found by `encode`
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_ms": round(latency_s * 1000, 3),
        "ttft_ms": None if ttft_s is None else round(ttft_s * 1000, 3),
        "stream": stream,
        "cache": cache,
        "fallback": backend == OLLAMA,
    }


def admin_line(
    *,
    request_id: str | None,
    trace_id: str | None,
    who: str,
    client: str | None,
    method: str,
    path: str,
    action: str | None,
    target: str | None,
    status: int,
    error_body: bytes | None,
    latency_s: float,
) -> Line:
    return {
        "time": time.time(),
        "kind": "admin",
        "request_id": request_id,
        "trace_id": trace_id,
        "who": who,
        "client": client,
        "method": method,
        "path": path[:_MAX_FIELD],
        "action": action,
        "target": target,
        "status": status,
        "error": error_body if status >= 400 else None,
        "latency_ms": round(latency_s * 1000, 3),
    }


def row_line(
    *,
    request_id: str,
    key: str | None,
    path: str,
    model: str,
    served_by: str | None,
    replica: str | None,
    backend: str | None,
    status: int,
    error_body: bytes | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    latency_s: float,
) -> Line:
    return {
        "time": time.time(),
        "kind": "batch_row",
        "request_id": request_id,
        "trace_id": None,
        "key": key,
        "path": path,
        "model": model[:_MAX_FIELD],
        "served_by": served_by,
        "replica": replica,
        "backend": backend,
        "status": status,
        "error": error_body if status >= 400 else None,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_ms": round(latency_s * 1000, 3),
        "fallback": backend == OLLAMA,
    }


def encode(line: Line) -> bytes:
    """One line of the file, newline included. Run by the writer, off the request path: the
    time is formatted, an error body becomes its code, captured bodies become text."""
    out = dict(line)
    out["time"] = iso(line["time"])
    error = line.get("error")
    if isinstance(error, bytes):
        detail = parse_error(error)
        out["error"] = None if detail is None else (detail.code or detail.type)
    elif line["status"] == CLIENT_CLOSED:
        out["error"] = "client_closed"
    for name in ("request_body", "reply_body"):
        body = line.get(name)
        if isinstance(body, bytes):
            out[name] = body.decode("utf-8", "replace")
    return orjson.dumps(out) + b"\n"


def iso(epoch: float) -> str:
    millis = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"
