"""Server-sent events: the one reader and writer of SSE in gateway/, and a failed stream's last
event in each API's dialect (https://html.spec.whatwg.org/multipage/server-sent-events.html).

Reading: `SseParser` takes a stream chunk by chunk (any line ending); `split`, `block_data` and
`parse_block` are its steps on LF-framed bytes, which the relay's check (`upstream/sse_check.py`)
uses too. Writing: `frame` / `json_frame` (a `data:` event, named with `event:` when given),
`DONE`, `comment`, `retry`. Failing: `error_event`.

Invariants:
- Frames are LF-only and end with a blank line; a payload's line breaks become one `data:` line
  each (orjson never writes one, so `json_frame` does not look).
- An event is complete only at its blank line; an event with no `data` line is no event (as
  the spec reads it: comments, a lone `retry:`).
- `error_event` is the event each API's SDK raises on, so a cut stream is never read as a
  whole answer: `openai`: `data: {"error": {...}}` (the openai SDK raises `APIError` on any
  event whose data carries `error`); `anthropic`: `event: error` with Anthropic's error body
  (the anthropic SDK raises `APIStatusError` on an `error` event); `responses`: `event: error`
  with the Responses API's error event (`type`, `code`, `message`, `param`,
  `sequence_number`) and, beside them, the `error` object: the openai SDK reads a Responses
  stream with the same decoder as chat, so it too raises only on a data object carrying
  `error`; `response.failed` would be handed to the caller as one more event, no exception.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

from orchestra.protocol import error_dict

from .dialect import Dialect, anthropic_error

DONE_DATA = b"[DONE]"  # the data of a chat/completions stream's last event
DONE = b"data: [DONE]\n\n"
_END = b"\n\n"  # an event's blank line (LF framing)
_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


class Event(NamedTuple):
    data: bytes  # the event's `data:` lines, joined by "\n"
    name: str | None = None  # its `event:` field (None: a plain `data:` event)


# ---- reading -------------------------------------------------------------------------------
def split(data: bytes) -> tuple[list[bytes], bytes]:
    """LF-framed `data` as its complete events' blocks (each without its blank line) and the
    bytes after the last blank line. Block `i` and its blank line are `len(block) + 2` bytes."""
    end = data.rfind(_END)
    if end < 0:
        return [], data
    return data[:end].split(_END), data[end + 2 :]


def block_data(block: bytes) -> bytes | None:
    """The data of one event (its lines LF-separated), as the spec reads it: the `data:` lines
    (one space after the colon dropped) joined by "\\n", comments and other fields skipped; None
    when it has none. The relay's check reads only this, for every event it passes."""
    data: bytes | None = None
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[6:] if line.startswith(b"data: ") else line[5:]
        elif line == b"data":  # a field with no colon has an empty value
            value = b""
        else:
            continue
        data = value if data is None else data + b"\n" + value
    return data


def parse_block(block: bytes) -> Event | None:
    """One event (its lines LF-separated): its data (`block_data`) and its `event:` name."""
    data = block_data(block)
    if data is None:
        return None
    name: str | None = None
    for line in block.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].removeprefix(b" ").decode("utf-8", "replace")
    return Event(data, name)


class SseParser:
    """Events from a stream fed chunk by chunk: an event split across chunks waits for the rest;
    CRLF and CR line endings read as LF."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""  # after the last complete event (LF-framed, but for a held CR)

    def feed(self, chunk: bytes) -> list[Event]:
        data = self._rest + chunk if self._rest else chunk
        held = b""
        if b"\r" in data:
            if data.endswith(b"\r"):  # perhaps the first half of a CRLF: wait for what follows
                data, held = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks, rest = split(data)
        self._rest = rest + held
        return [event for block in blocks if (event := parse_block(block)) is not None]


# ---- writing -------------------------------------------------------------------------------
def frame(data: bytes, name: str | None = None) -> bytes:
    """One event: `data` (one `data:` line per line of it), named `name` when given."""
    if b"\n" in data or b"\r" in data:
        data = b"\ndata: ".join(data.splitlines())
    if name is None:
        return b"data: " + data + _END
    return b"event: " + name.encode() + b"\ndata: " + data + _END


def json_frame(obj: Any, name: str | None = None) -> bytes:
    """One event whose data is `obj` as JSON."""
    if name is None:
        return b"data: " + orjson.dumps(obj) + _END
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + _END


def comment(text: str) -> bytes:
    """A comment: clients skip it, proxies see bytes (a keep-alive, a progress note)."""
    return b"".join(b": " + line + b"\n" for line in text.encode().splitlines() or [b""]) + b"\n"


def retry(ms: int) -> bytes:
    """The reconnection delay an EventSource client waits after losing the stream."""
    return b"retry: %d\n\n" % ms


# ---- failing -------------------------------------------------------------------------------
def error_event(
    dialect: Dialect,
    message: str,
    type_: str = "upstream_error",
    code: str | int | None = None,
    param: str | None = None,
    *,
    status: int = 502,
    after: bytes = b"",
) -> bytes:
    """A stream's last event, saying it failed, in `dialect` (module doc). `status`: the HTTP
    status the failure would have had (Anthropic's error type); `after`: the end of what the
    client has received: a partial last event there is ended first, and a Responses stream's
    `sequence_number` goes on from its last."""
    start = b"" if not after or after.endswith((_END, b"\r\n\r\n")) else _END
    if dialect == "anthropic":
        return start + json_frame(anthropic_error(message, status), "error")
    error = error_dict(message, type_, code, param)
    if dialect == "responses":
        event = {
            "type": "error",
            "code": None if code is None else str(code),
            "message": message,
            "param": param,
            "sequence_number": next_sequence(after),
            **error,
        }
        return start + json_frame(event, "error")
    return start + json_frame(error)


def next_sequence(after: bytes) -> int:
    """The `sequence_number` that follows the last one in `after` (a Responses stream's tail)."""
    found = _SEQUENCE.findall(after)
    return int(found[-1]) + 1 if found else 0
