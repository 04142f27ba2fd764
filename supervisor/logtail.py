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
