"""The audit file on disk: appended by every gateway worker, rotated by size, never torn.

Invariants:
- Every write is of whole lines, in one `os.write` on an `O_APPEND` descriptor, made while this
  process holds the exclusive `flock` of `PATH.lock`: lines of several workers never interleave,
  and none is written into a file another worker just rotated away.
- Rotation happens under the same lock: PATH.<keep-1> -> PATH.<keep>, ..., PATH -> PATH.1, and a
  new PATH. A worker notices at its next write that PATH's inode is no longer the one it holds
  open, and opens the new one; so every line lands in the live file, whoever rotated it.
- The live file passes `max_bytes` only by a single line longer than that (it goes alone).
- In this process, one write at a time (a thread lock: a write the lifespan's end cancelled
  still runs in its thread while the last lines are written).
- Written lines are in the kernel's page cache at once: a killed process (even `kill -9`) loses
  only what it had not written yet; a machine crash may lose what was not flushed to disk.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

_MODE = 0o600  # key names, client addresses, maybe bodies: for the operator only


def rotated(path: Path, index: int) -> Path:
    """The `index`-th rotated file (1: the newest)."""
    return path.with_name(f"{path.name}.{index}")


class AuditFile:
    """PATH, appended under PATH.lock. Blocking calls: run them off the event loop."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self._max = max_bytes
        self._keep = keep
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock")
        self._lock = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _MODE)
        self._fd = -1
        self._inode = -1
        self._mutex = threading.Lock()

    def write(self, lines: Sequence[bytes]) -> None:
        """Append `lines` (each ending in a newline), rotating before one would pass the size."""
        with self._mutex:
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            try:
                size = self._live_size()
                for chunk, rotate in _chunks(lines, size, self._max):
                    if rotate:
                        self._rotate()
                    _write_all(self._fd, chunk)
            finally:
                fcntl.flock(self._lock, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock >= 0:
                os.close(self._lock)
                self._lock = -1

    def _live_size(self) -> int:
        """The live file's size, opened afresh when it is not the one held (rotated, removed)."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = -1
        if inode != self._inode or self._fd < 0:
            self._open()
        return os.fstat(self._fd).st_size

    def _open(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, _MODE)
        self._inode = os.fstat(self._fd).st_ino

    def _rotate(self) -> None:
        if self._keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self._keep - 1, 0, -1):
                older = rotated(self.path, index)
                if older.exists():
                    older.replace(rotated(self.path, index + 1))
            self.path.replace(rotated(self.path, 1))
        self._open()


def _chunks(lines: Sequence[bytes], size: int, limit: int) -> Iterator[tuple[bytes, bool]]:
    """`lines` joined into chunks that each fit one file: (chunk, rotate first). `size`: the
    live file's size now. A line that does not fit after what a file holds starts a new file;
    one longer than `limit` goes alone."""
    chunk: list[bytes] = []
    used = size  # bytes in the file the chunk goes to
    rotate = False
    for line in lines:
        if used and used + len(line) > limit:
            if chunk:
                yield b"".join(chunk), rotate
                chunk = []
            rotate, used = True, 0  # the next chunk goes to a new file
        chunk.append(line)
        used += len(line)
    if chunk:
        yield b"".join(chunk), rotate


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
