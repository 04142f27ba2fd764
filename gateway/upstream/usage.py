"""Reading a reply's `usage` from the bytes the proxy relays, without re-encoding them.

Invariants:
- A non-streaming JSON reply is parsed once, here; a body that says it is JSON but is not is
  reported (`ok` False) so the proxy can treat the replica as faulty.
- A stream's usage is looked for only in its tail (the last `TAIL_BYTES` relayed): vLLM sends
  it in the final chunk (`stream_options.include_usage`), just before `[DONE]`. A usage whose
  `data:` prefix fell off the tail is not guessed at.
"""

from __future__ import annotations

import orjson

TAIL_BYTES = 4096  # enough to hold a stream's final usage chunk and [DONE]


def json_reply_usage(body: bytes, content_type: str) -> tuple[bool, object]:
    """(ok, usage): ok is False when a JSON reply does not parse; usage is the body's `usage`
    (None when absent, or when the reply is not JSON at all)."""
    if not content_type.startswith("application/json"):
        return True, None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, None
    return True, payload.get("usage") if isinstance(payload, dict) else None


def usage_from_tail(tail: bytes) -> object:
    """The `usage` of the stream's last chunk that carries one (include_usage), else None."""
    at = tail.rfind(b'"usage"')
    if at < 0:
        return None
    start = tail.rfind(b"data:", 0, at)
    end = tail.find(b"\n", at)
    if start < 0:
        return None
    try:
        payload = orjson.loads(tail[start + 5 : end if end >= 0 else len(tail)])
    except orjson.JSONDecodeError:
        return None
    return payload.get("usage") if isinstance(payload, dict) else None
