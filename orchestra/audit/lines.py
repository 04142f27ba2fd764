"""The audit lines' shape: one JSON object per line, its fields named here and nowhere else.

Three kinds, all with `time` (UTC, ISO 8601, ms), `kind`, `request_id`, `trace_id` (the
request's trace when tracing put one in the scope's state, else null), `status` and `error`
(the error's `code`, or its type when it has none):
- `request`: an HTTP request to a route with API keys: the key's name (never the key),
  the client's address, method, path, the model asked and the model and engine that served,
  the backend, tokens, latency and (streams) time to the response's head, and the marks:
  `cache` (`x-orchestra-cache`: hit, miss, bypass), `attempts` (upstream attempts: 2 and more
  when the proxy retried on another replica or the chain moved on; 0 when none was made, a
  cache hit) and `fallback` (the chain's model that served when it was not the first, Ollama's
  included; else null), both read from the call's `Marks` (gateway/core/call.py);
- `admin`: an admin action, written by the gateway (the console's model actions, a key made,
  disabled, enabled or deleted) and by the supervisor (its control API's load, unload, sleep,
  wake, restart and adapter changes: `orchestra load|...`, `orchestra adapters`, the gateway's
  own calls): who (the admin key or token, or a loopback caller while none is configured), from
  where, the action, its target (a model, a key) and `adapter` (an adapter's action);
- `batch_row`: one row of a batch, charged to the key that submitted it, with the same marks.

A line never holds a key's secret: only names. Bodies only with `gateway.audit.capture_bodies`.

Cost: the request path hands over a plain tuple of the values in `FIELDS[kind]`'s order (a dict
or a call with keywords cost several times more per request); everything else is done by
`encode`, in the writer's thread: the time formatted, milliseconds rounded, an error body
read for its code, client strings cut.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

import orjson

from orchestra.protocol import parse_error

REQUEST, ADMIN, BATCH_ROW = "request", "admin", "batch_row"

# The values each kind's tuple carries, in order (the line's fields after `time` and `kind`).
# `error`: the answer's body when it is an error (bytes; its code is read by `encode`), else
# None; `latency_ms` and `ttft_ms`: floats, rounded by `encode`.
_SERVED = ("served_by", "replica", "backend", "status", "error")  # who answered, and how
_TOKENS = ("prompt_tokens", "completion_tokens", "latency_ms")
_MARKS = ("attempts", "fallback")
FIELDS: dict[str, tuple[str, ...]] = {
    REQUEST: (
        "request_id", "trace_id", "key", "client", "method", "path", "model",
        *_SERVED, *_TOKENS, "ttft_ms", "stream", "cache", *_MARKS,
    ),
    ADMIN: (
        "request_id", "trace_id", "who", "client", "method", "path", "action", "target",
        "status", "error", "latency_ms", "adapter",
    ),
    BATCH_ROW: ("request_id", "trace_id", "key", "path", "model", *_SERVED, *_TOKENS, *_MARKS),
}  # fmt: skip

# One queued line: kind, epoch seconds, the values of FIELDS[kind], and the captured bodies
# (request, reply) when `capture_bodies` is on (None: off).
Entry = tuple[str, float, tuple[Any, ...], tuple[bytes | None, bytes | None] | None]

CLIENT_CLOSED = 499  # the edge's status for a client that left before the last byte
_CUT = ("path", "model")  # client-sent strings, cut to _MAX_FIELD
_MAX_FIELD = 256

# The ASGI scope's state: (action, target, adapter) an admin endpoint noted.
ACTION = "audit_action"


def note_action(
    scope: MutableMapping[str, Any], action: str, target: str | None, adapter: str | None = None
) -> None:
    """An admin endpoint names what it does (`key.create`, `model.load`) and to what (and which
    adapter of the model), for the line written when it has answered (the gateway's edge, the
    supervisor's `audited.py`)."""
    scope.setdefault("state", {})[ACTION] = (action, target, adapter)


def encode(entry: Entry, stamps: Stamps) -> bytes:
    """One line of the file, newline included (the writer's thread)."""
    kind, at, values, bodies = entry
    out: dict[str, Any] = {"time": stamps.iso(at), "kind": kind}
    out.update(zip(FIELDS[kind], values, strict=True))
    for name in _CUT:
        value = out.get(name)
        if isinstance(value, str) and len(value) > _MAX_FIELD:
            out[name] = value[:_MAX_FIELD]
    for name in ("latency_ms", "ttft_ms"):
        if out.get(name) is not None:
            out[name] = round(out[name], 3)
    out["error"] = _error(out["status"], out["error"])
    if bodies is not None:
        request, reply = bodies
        out["request_body"] = None if request is None else request.decode("utf-8", "replace")
        out["reply_body"] = None if reply is None else reply.decode("utf-8", "replace")
    return orjson.dumps(out) + b"\n"


def _error(status: int, body: object) -> str | int | None:
    if status < 400:
        return None
    if isinstance(body, bytes):
        detail = parse_error(body)
        if detail is not None:
            return detail.code or detail.type
    return "client_closed" if status == CLIENT_CLOSED else None


def iso(epoch: float) -> str:
    return Stamps().iso(epoch)


class Stamps:
    """ISO 8601 times, UTC, to the millisecond, with the second's text kept: a writer's lines
    come a few thousand a second. The kept pair is one attribute, replaced whole, so two threads
    never mix a second and a text."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: tuple[int, str] = (-1, "")

    def iso(self, epoch: float) -> str:
        second, millis = divmod(round(epoch * 1000), 1000)
        kept = self._kept
        if kept[0] != second:
            kept = self._kept = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{kept[1]}.{millis:03d}Z"
