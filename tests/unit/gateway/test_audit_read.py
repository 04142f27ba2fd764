"""Reading the audit trail back (`orchestra audit`): files oldest first, the filters, the last N,
and following the live file across a rotation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from orchestra.audit.files import AuditFile
from orchestra.audit.lines import iso
from orchestra.gateway.audit.read import Filter, Record, follow, last, records, since


def _line(i: int, **fields: object) -> bytes:
    record = {"time": iso(1_800_000_000 + i), "kind": "request", "i": i, **fields}
    return orjson.dumps(record) + b"\n"


def test_records_come_oldest_first_across_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditFile(path, 4096, keep=10)
    for i in range(100):
        audit.write([_line(i, pad="x" * 100)])
    audit.close()
    assert [r["i"] for r in records(path)] == list(range(100))
    assert [r["i"] for r in last(path, 3)] == [97, 98, 99]


def test_a_line_being_written_or_not_json_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(_line(0) + b"not json\n" + _line(1) + b'{"time": "2026')
    assert [r["i"] for r in records(path)] == [0, 1]


def test_filters_by_key_time_model_status_and_kind() -> None:
    record: Record = {
        "time": iso(1_800_000_000),
        "kind": "request",
        "key": "team-a",
        "model": "chat",
        "served_by": "smollm2",
        "status": 503,
    }
    assert Filter()(record)
    assert Filter(key="team-a", model="chat", status="5xx", kind="request")(record)
    assert Filter(model="smollm2", status="503")(record)  # the model that served counts too
    assert not Filter(key="team-b")(record)
    assert not Filter(status="2xx")(record)
    assert not Filter(status="500")(record)
    assert not Filter(kind="admin")(record)
    assert Filter(since=1_800_000_000)(record)
    assert not Filter(since=1_800_000_000.5)(record)


def test_since_reads_the_usage_ledgers_words() -> None:
    now = 1_800_000_000.0
    assert since("1h", now) == now - 3600
    assert since("2026-12-01", now) == 1796083200.0
    with pytest.raises(ValueError, match="since must be like"):
        since("yesterday", now)


def test_follow_reads_new_lines_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditFile(path, 1024, keep=3)
    audit.write([_line(-1), _line(0)])  # before following: the last one is its history
    got: list[int] = []
    following = threading.Event()

    def write() -> None:
        following.wait(10)
        for i in range(1, 30):  # rotates a few times
            audit.write([_line(i, pad="x" * 150)])
            time.sleep(0.01)  # a file lasts ~60 ms: longer than a look (`tail -F` too)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        stop = time.monotonic() + 30

        def done() -> bool:
            following.set()
            return len(got) >= 30 or time.monotonic() > stop

        for record in follow(path, Filter(), 0.01, done, history=1):
            got.append(record["i"])
    finally:
        writer.join(timeout=30)
        audit.close()
    assert got == list(range(30))  # the last line there was, then every new one
