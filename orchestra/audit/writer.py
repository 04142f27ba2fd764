"""The audit log of one gateway worker: lines queued on the request path, written by one task.

Invariants:
- The request path only appends to a bounded list (`emit`: no I/O, no await, no encoding).
  Past `queue_size` waiting lines a line is dropped and counted in
  `orchestra_audit_dropped_total`; the request is never slowed.
- One writer (`run`, a background loop of the lifespan) encodes and writes what waits, in a
  thread, at least every `flush_s` and as soon as half the queue is full; `close` writes the
  rest at shutdown. A `kill -9` loses at most what waited: the lines of the last `flush_s`.
- A write that fails (disk full, a removed folder) drops its lines, counted like the others:
  the log never grows without bound in memory while the disk is away. A line that cannot be
  encoded (a caller's bug) is dropped alone, counted and logged; the others are written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import Counter

from orchestra.config import AuditConfig

from .files import AuditFile
from .lines import Entry, Stamps, encode

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, config: AuditConfig, dropped: Counter) -> None:
        self.config = config
        self._dropped = dropped
        self._limit = config.queue_size
        self._early = max(1, config.queue_size // 2)  # wake the writer at once from here
        self._pending: list[Entry] = []
        self._stamps = Stamps()  # the writer thread's (one write at a time)
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()  # one write at a time: the loop's, or close's
        self._failing = False
        try:
            self._file = AuditFile(config.path, config.max_bytes, config.keep)
        except OSError as exc:
            raise RuntimeError(
                f"gateway.audit.path: cannot open {config.path}: {exc.strerror}"
            ) from None

    def emit(
        self,
        kind: str,
        values: tuple[Any, ...],
        request_body: bytes | None = None,
        reply_body: bytes | None = None,
    ) -> None:
        """Queue one line: `values` in `lines.FIELDS[kind]`'s order (the request path). With
        `capture_bodies`, the bodies given ride along, cut to `max_body_bytes`."""
        if len(self._pending) >= self._limit:
            self._dropped.inc()
            return
        bodies = None
        if self.config.capture_bodies:
            cut = self.config.max_body_bytes
            bodies = (
                None if request_body is None else request_body[:cut],
                None if reply_body is None else reply_body[:cut],
            )
        self._pending.append((kind, time.time(), values, bodies))
        if len(self._pending) == self._early:
            self._wake.set()

    def waiting(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """The one writer; runs until cancelled."""
        while True:
            try:
                async with asyncio.timeout(self.config.flush_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what waits now."""
        async with self._writing:
            batch = self._pending.copy()
            self._pending.clear()
            if batch:
                await asyncio.to_thread(self._write, batch)

    async def close(self) -> None:
        """The last lines written (the lifespan's end), the file closed."""
        await self.flush()
        self._file.close()

    def _write(self, batch: list[Entry]) -> None:
        lines = []
        for entry in batch:
            try:
                lines.append(encode(entry, self._stamps))
            except Exception:  # a caller's bug (a tuple of the wrong shape): that line only
                self._dropped.inc()
                log.exception("audit: cannot encode a %s line; dropped", entry[0])
        try:
            self._file.write(lines)
        except OSError as exc:
            self._dropped.inc(len(lines))
            if not self._failing:
                log.warning("audit: cannot write %s (%s); lines dropped", self._file.path, exc)
            self._failing = True
            return
        if self._failing:
            log.info("audit: %s takes writes again", self._file.path)
        self._failing = False
