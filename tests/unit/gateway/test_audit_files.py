"""The audit file: rotation by size keeping N files of whole lines, a write larger than a file,
a rotation by another writer followed, and several processes appending at once without a torn,
interleaved or lost line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from orchestra.audit.files import AuditFile, rotated
from orchestra.gateway.audit.read import files


def _file(tmp_path: Path, max_bytes: int, keep: int) -> tuple[AuditFile, Path]:
    path = tmp_path / "logs" / "audit.jsonl"
    return AuditFile(path, max_bytes, keep), path


def _numbered(start: int, count: int, width: int = 100) -> list[bytes]:
    return [f"{i:0{width - 1}d}\n".encode() for i in range(start, start + count)]


def test_rotation_by_size_keeps_n_files_of_whole_lines(tmp_path: Path) -> None:
    audit, path = _file(tmp_path, 1000, keep=3)
    for start in range(0, 95, 5):  # 95 lines of 100 bytes, 5 per write: 10 per file
        audit.write(_numbered(start, 5))
    audit.close()
    kept = files(path)
    assert kept == [rotated(path, 3), rotated(path, 2), rotated(path, 1), path]
    assert all(p.stat().st_size <= 1000 for p in kept)
    numbers = [int(line) for p in kept for line in p.read_bytes().splitlines()]
    assert numbers == list(range(60, 95))  # 3 full files and the live one, in order
    assert not rotated(path, 4).exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_one_write_bigger_than_a_file_spreads_over_new_files(tmp_path: Path) -> None:
    audit, path = _file(tmp_path, 1000, keep=10)
    audit.write(_numbered(0, 3))
    audit.write(_numbered(3, 25))  # 7 fit in the live file, then 10, then 8
    audit.write([b"x" * 1500 + b"\n"])  # longer than a file: alone in its own
    audit.close()
    sizes = [p.stat().st_size for p in files(path)]
    assert sizes == [1000, 1000, 800, 1501]
    numbers = [int(line) for p in files(path)[:-1] for line in p.read_bytes().splitlines()]
    assert numbers == list(range(28))


def test_a_file_rotated_by_another_writer_is_followed(tmp_path: Path) -> None:
    first, path = _file(tmp_path, 1000, keep=5)
    second = AuditFile(path, 1000, 5)
    first.write(_numbered(0, 9))
    second.write(_numbered(9, 2))  # rotates: line 9 ends the file, line 10 starts a new one
    first.write(_numbered(11, 1))  # into the new live file, not the rotated one it held
    first.close()
    second.close()
    assert [int(x) for x in rotated(path, 1).read_bytes().splitlines()] == list(range(10))
    assert [int(x) for x in path.read_bytes().splitlines()] == [10, 11]


# A process appending `count` lines of its own, in batches of 7 (it imports only the file).
_WRITER = """
import sys
from pathlib import Path
import orjson
from orchestra.audit.files import AuditFile

path, worker, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
audit = AuditFile(path, 20_000, keep=1000)
lines = [orjson.dumps({"w": worker, "i": i, "pad": "x" * (i % 50)}) + b"\\n" for i in range(count)]
for start in range(0, count, 7):
    audit.write(lines[start : start + 7])
audit.close()
"""


def test_several_processes_write_whole_lines_and_lose_none(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(w), "3000"])
        for w in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    seen: dict[int, list[int]] = {w: [] for w in range(4)}
    for name in files(path):
        data = name.read_bytes()
        assert len(data) <= 20_000 and data.endswith(b"\n")
        for raw in data.splitlines():
            line = orjson.loads(raw)  # a torn or interleaved line would not parse
            seen[line["w"]].append(line["i"])
    assert len(files(path)) > 10  # rotated many times while four processes wrote
    assert all(numbers == list(range(3000)) for numbers in seen.values())
