"""Validation of relayed upstream bytes: SSE events and whole JSON bodies.

`SseCheck` passes a stream on event by event: it releases bytes only up to the last complete
event (`\\n\\n`), after checking that each event's data is JSON (or `[DONE]`). vLLM writes
whole events per chunk, so nothing is held back in practice; a malformed event is never
forwarded, and the relay ends the stream with an error event instead (`core/sse.py`, in the
call's dialect). The fast path (one `data:` event per chunk, vLLM's chat and completions) is
checked here in place; any other chunk is split and read by `core/sse.py`.
"""

from __future__ import annotations

import orjson

from ..core.sse import DONE_DATA, block_data, split


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
            if payload != DONE_DATA:
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
        blocks, rest = split(data)
        if not blocks:
            self.pending = data
            return b""
        good = 0  # the bytes of the events checked so far
        for block in blocks:
            found = block_data(block)
            if found and found != DONE_DATA:
                try:
                    orjson.loads(found)
                except orjson.JSONDecodeError:
                    self.bad = True
                    self.pending = b""
                    return data[:good]
            good += len(block) + 2  # the block and its blank line
        self.pending = rest
        return data[:good]

    def flush(self) -> bytes:
        """What is left at the end of the stream (an unterminated last event), unchecked."""
        out, self.pending = self.pending, b""
        return out


def valid_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


class MalformedStream(Exception):
    """What the relay records (`RelayedStream.fail`) when `SseCheck` finds an event that is not
    JSON: the stream ends with one error event."""
