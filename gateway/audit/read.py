"""Reading the audit trail back, for people (`orchestra audit tail|query`): the rotated files
oldest first, then the live one; lines filtered by key, time, model, status and kind.

Only complete lines count: the writers write whole lines (`files.py`), so a line without its
newline is one being written now, read on the next pass of `follow`.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from orchestra.audit.files import rotated

from ..core.errors import GatewayError

Record = dict[str, Any]


def files(path: Path) -> list[Path]:
    """The trail's files, oldest first: PATH.N ... PATH.1, PATH (those that exist)."""
    older: list[Path] = []
    index = 1
    while rotated(path, index).exists():
        older.append(rotated(path, index))
        index += 1
    return [*reversed(older), *([path] if path.exists() else [])]


def records(path: Path) -> Iterator[Record]:
    """Every line of the trail, oldest first (a line that is not JSON is skipped)."""
    for name in files(path):
        try:
            with name.open("rb") as f:
                yield from _parsed(f)
        except FileNotFoundError:  # rotated away while we read: its lines moved on
            continue


def _parsed(lines: Any) -> Iterator[Record]:
    for raw in lines:
        if not raw.endswith(b"\n"):
            return  # a line being written now
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record


@dataclass(frozen=True)
class Filter:
    key: str | None = None
    since: float | None = None  # epoch seconds
    model: str | None = None  # the model asked, the one that served, an admin action's target
    status: str | None = None  # `200`, `5xx`, `4xx`
    kind: str | None = None  # request, admin, batch_row

    def __call__(self, record: Record) -> bool:
        if self.key is not None and record.get("key") != self.key:
            return False
        if self.kind is not None and record.get("kind") != self.kind:
            return False
        if self.model is not None and self.model not in (
            record.get("model"),
            record.get("served_by"),
            record.get("target"),
        ):
            return False
        if self.status is not None and not _status_matches(self.status, record.get("status")):
            return False
        return self.since is None or epoch(record.get("time")) >= self.since


def _status_matches(wanted: str, status: object) -> bool:
    text = str(status)
    if len(wanted) == 3 and wanted.lower().endswith("xx"):
        return text[:1] == wanted[0]
    return text == wanted


def epoch(stamp: object) -> float:
    """A line's `time` (ISO 8601) as epoch seconds; 0 when unreadable."""
    if not isinstance(stamp, str):
        return 0.0
    try:
        return dt.datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


def last(path: Path, count: int, keep: Callable[[Record], bool] = lambda _: True) -> list[Record]:
    """The last `count` lines that `keep` takes, oldest first."""
    found: deque[Record] = deque(maxlen=count)
    for record in records(path):
        if keep(record):
            found.append(record)
    return list(found)


def follow(
    path: Path,
    keep: Callable[[Record], bool],
    interval_s: float,
    stop: Callable[[], bool] = lambda: False,
    history: int = 0,
) -> Iterator[Record]:
    """The last `history` lines, then new lines of the live file as they come, across
    rotations, until `stop()`. The live file is read once from its start and then followed
    from where that read ended, so no line is missed or repeated between the two."""
    found: deque[Record] = deque(maxlen=history)  # the history; past it, every new line
    for name in files(path)[:-1] if path.exists() else files(path):
        try:
            with name.open("rb") as older:
                found.extend(r for r in _parsed(older) if keep(r))
        except FileNotFoundError:
            continue
    f = _open(path)
    pending = b""
    while True:
        if f is None:
            f = _open(path)
        if f is not None:
            pending += f.read()
            complete, _, pending = pending.rpartition(b"\n")
            if complete:
                lines = (line + b"\n" for line in complete.split(b"\n"))
                found.extend(r for r in _parsed(lines) if keep(r))
        yield from found
        found = deque()  # unbounded from now on: every new line is printed
        if stop():
            break
        if f is not None and _rotated(path, f):  # the old file read to its end: the new one
            rest = f.read()
            if rest:
                pending += rest
                continue
            f.close()
            f, pending = _open(path), b""
            continue
        time.sleep(interval_s)
    if f is not None:
        f.close()


def _open(path: Path) -> Any:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _rotated(path: Path, f: Any) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


def since(value: str, now: float) -> float:
    """`1h`, `30m`, `7d` ago or an ISO date, as epoch seconds (the usage ledger's reading);
    ValueError with what is wrong."""
    # Imported here: the ledger's module brings SQLAlchemy, seconds to import on a busy
    # machine, which `orchestra audit tail` has no use for.
    from ..usage.query import parse_since

    try:
        return float(parse_since(value, now))
    except GatewayError as exc:
        raise ValueError(exc.message) from None
