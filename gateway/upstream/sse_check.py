"""Validation of relayed upstream bytes: SSE events and whole JSON bodies.

`SseCheck` passes a stream on event by event: it releases bytes only up to the last complete
event (`\\n\\n`), after checking that each `data:` payload is JSON (or `[DONE]`). vLLM writes
whole events per chunk, so nothing is held back in practice; a malformed event is never
forwarded, and the relay ends the stream with an OpenAI-shaped error event instead.
"""

from __future__ import annotations

import orjson

_DONE = b"[DONE]"


class SseCheck:
    __slots__ = ("bad", "off", "pending")

    def __init__(self) -> None:
        self.pending = b""  # bytes after the last complete event, not yet sent
        self.bad = False
        self.off = False  # CRLF framing: passed through unchecked

    def feed(self, chunk: bytes) -> bytes:
        """Bytes that may be sent now; on a bad event sets `bad` and returns the good prefix."""
        if (  # fast path, vLLM's usual chunk: exactly one `data: ...` event, nothing pending
            not self.pending
            and chunk.startswith(b"data: ")
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk.endswith(b"\n\n")
            and not self.off
        ):
            payload = chunk[6:-2]
            if payload != _DONE:
                try:
                    orjson.loads(payload)
                except orjson.JSONDecodeError:
                    self.bad = True
                    return b""
            return chunk
        if self.off or b"\r" in chunk:
            self.off = True
            return self.flush() + chunk
        data = self.pending + chunk if self.pending else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self.pending = data
            return b""
        complete, self.pending = data[: end + 2], data[end + 2 :]
        start = 0
        for event in complete.split(b"\n\n"):
            if event and not _valid_event(event):
                self.bad = True
                self.pending = b""
                return complete[:start]
            start += len(event) + 2
        return complete

    def flush(self) -> bytes:
        """What is left at the end of the stream (an unterminated last event), unchecked."""
        out, self.pending = self.pending, b""
        return out


def _valid_event(event: bytes) -> bool:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != _DONE:
                try:
                    orjson.loads(payload)
                except orjson.JSONDecodeError:
                    return False
    return True


def valid_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


class MalformedStream(Exception):
    """Raised by the relay when `SseCheck` finds an event that is not JSON."""
