"""Weight files in the OS page cache: find them, measure residency (mincore), preload them.

Blocking functions: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestra.protocol import PageCache

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
PAGE = os.sysconf("SC_PAGE_SIZE")
_WINDOW = 1 << 30  # mincore one GiB of mapping at a time (a page-aligned window)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
_MAP_FAILED = ctypes.c_void_p(-1).value


@dataclass(frozen=True)
class Residency:
    bytes_total: int = 0
    bytes_resident: int = 0

    @property
    def fraction(self) -> float:
        return self.bytes_resident / self.bytes_total if self.bytes_total else 0.0

    def __add__(self, other: Residency) -> Residency:
        return Residency(
            self.bytes_total + other.bytes_total, self.bytes_resident + other.bytes_resident
        )

    def as_page_cache(self) -> PageCache:
        """As the model table sends it."""
        return PageCache(
            bytes_total=self.bytes_total,
            bytes_resident=self.bytes_resident,
            fraction=round(self.fraction, 4),
        )


def weight_files(model: str) -> list[Path]:
    """The model's weight files: the path itself if a file, else *.safetensors|bin|gguf below it."""
    if not model:
        return []
    path = Path(model).expanduser()
    try:
        if path.is_file():
            return [path]
        if path.is_dir():
            return sorted(f for f in path.rglob("*") if f.suffix in WEIGHT_SUFFIXES and f.is_file())
    except OSError:
        pass
    return []


def file_residency(path: Path) -> Residency:
    """Bytes of `path` now in the page cache, by mincore over a read-only shared mapping."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return Residency()
    try:
        size = os.fstat(fd).st_size
        resident_pages = 0
        for offset in range(0, size, _WINDOW):
            length = min(_WINDOW, size - offset)
            resident_pages += _mincore_window(fd, offset, length)
        return Residency(size, min(size, resident_pages * PAGE))
    finally:
        os.close(fd)


def _mincore_window(fd: int, offset: int, length: int) -> int:
    addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    if addr in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), "mmap failed")
    try:
        pages = (length + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * pages)()
        if _libc.mincore(addr, length, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        data = bytes(vec)
        return len(data) - data.count(0)
    finally:
        _libc.munmap(addr, length)


def residency(files: list[Path]) -> Residency:
    total = Residency()
    for f in files:
        total += file_residency(f)
    return total


def preload_file(
    path: Path, method: str, chunk_bytes: int, stop: Callable[[], bool] = lambda: False
) -> int:
    """Bring `path` into the page cache; returns its size. `read`: sequential reads (blocking,
    done when it returns; `stop()` is checked between chunks); `mmap`: MADV_WILLNEED on a
    mapping (the kernel reads ahead asynchronously)."""
    with path.open("rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return 0
        if method == "mmap":
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
                mapping.madvise(mmap.MADV_WILLNEED)
            return size
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        buf = bytearray(chunk_bytes)
        view = memoryview(buf)
        while not stop() and f.readinto(view):
            pass
        return size


def evict_file(path: Path) -> None:
    """Drop `path`'s clean pages from the page cache (for tests and measurements)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
