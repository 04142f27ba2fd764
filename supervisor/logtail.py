"""Read the last lines of an engine log without loading the whole file."""

from __future__ import annotations

import os
from pathlib import Path

_CHUNK = 64 * 1024


def tail_lines(path: Path, lines: int, since: int = 0) -> list[str]:
    """The last `lines` lines of `path` at or after byte offset `since` ([] if no file)."""
    if lines <= 0:
        return []
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            pos, data = end, b""
            while pos > since and data.count(b"\n") <= lines:
                step = min(_CHUNK, pos - since)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


def read_since(path: Path, offset: int, max_bytes: int) -> tuple[list[str], int]:
    """Whole lines written at or after byte `offset` (at most `max_bytes` of them), and the
    offset to ask from next time. A file shorter than `offset` was replaced: read from 0."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            if offset > end:
                offset = 0
            f.seek(offset)
            data = f.read(min(end - offset, max_bytes))
    except OSError:
        return [], 0
    cut = data.rfind(b"\n") + 1  # a half-written last line waits for the next read
    text = data[:cut].decode("utf-8", errors="replace")
    return text.splitlines(), offset + cut
