"""Anthropic's error shape, for the paths that speak Anthropic's Messages API.

On those paths (the route table's `Traits(dialect="anthropic")`) an error the gateway itself
answers — auth, an unknown model, limits, no engine — leaves as `{"type": "error", "error": {"type",
"message"}}` with the same status, which is what the `anthropic` SDK parses. An engine's own
error (vLLM's Anthropic router already answers in this shape) passes through unchanged. The
shape and its types are `core/dialect.py`'s (a stream's last event uses them too).
"""

from __future__ import annotations

import orjson

from orchestra.protocol import parse_error

from ..core.dialect import anthropic_error
from ..core.reply import JSON, Reply


def as_anthropic(reply: Reply) -> Reply:
    """`reply` in Anthropic's shape when it is an OpenAI-shaped error; else unchanged."""
    body = reply.body
    if reply.status < 400 or not isinstance(body, bytes):
        return reply
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return reply
    if isinstance(payload, dict) and payload.get("type") == "error":
        return reply  # already Anthropic's (the engine's own)
    error = parse_error(payload)
    if error is None:
        return reply
    shaped = reply.with_body(orjson.dumps(anthropic_error(error.message, reply.status)))
    shaped.headers["content-type"] = JSON
    return shaped
