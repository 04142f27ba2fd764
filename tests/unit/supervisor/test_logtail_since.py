"""`read_since`: what `orchestra logs -f` reads after an offset (whole lines only; a file
replaced by a shorter one is read from its start)."""

from __future__ import annotations

from pathlib import Path

from orchestra.supervisor.logtail import read_since


def test_follow_reads_whole_new_lines_from_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    log.write_bytes(b"one\ntwo\n")
    lines, offset = read_since(log, 0, 1 << 20)
    assert lines == ["one", "two"] and offset == 8
    with log.open("ab") as f:
        f.write(b"three\nfour-half")  # a line still being written
    lines, offset = read_since(log, offset, 1 << 20)
    assert lines == ["three"] and offset == 14
    with log.open("ab") as f:
        f.write(b"-done\n")
    assert read_since(log, offset, 1 << 20) == (["four-half-done"], 29)
    assert read_since(log, 29, 1 << 20) == ([], 29)


def test_a_replaced_file_is_read_from_the_start_and_reads_are_bounded(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    log.write_bytes(b"new\n")
    assert read_since(log, 500, 1 << 20) == (["new"], 4)
    log.write_bytes(b"a\nb\nc\n")
    assert read_since(log, 0, 4) == (["a", "b"], 4)  # the rest on the next read
    assert read_since(tmp_path / "missing.log", 10, 100) == ([], 0)
