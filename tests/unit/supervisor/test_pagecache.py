from __future__ import annotations

import os
from pathlib import Path

from orchestra.supervisor.logtail import tail_lines
from orchestra.supervisor.pagecache import evict_file, file_residency, preload_file, weight_files


def test_weight_files_of_a_folder_or_a_file(tmp_path: Path) -> None:
    for name in ("model-1.safetensors", "x.bin", "q.gguf", "config.json"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in weight_files(str(tmp_path))] == [
        "model-1.safetensors",
        "q.gguf",
        "x.bin",
    ]
    assert weight_files(str(tmp_path / "q.gguf")) == [tmp_path / "q.gguf"]
    assert weight_files(str(tmp_path / "missing")) == [] and weight_files("") == []


def test_residency_rises_after_preload(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(8 << 20))
    evict_file(f)
    before = file_residency(f)
    preload_file(f, "read", 1 << 20)
    after = file_residency(f)
    assert before.bytes_total == after.bytes_total == 8 << 20
    assert after.fraction > 0.99 and after.fraction > before.fraction


def test_tail_lines(tmp_path: Path) -> None:
    f = tmp_path / "log"
    f.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert tail_lines(f, 3) == ["line 997", "line 998", "line 999"]
    assert tail_lines(tmp_path / "none", 3) == []
    since = len("".join(f"line {i}\n" for i in range(998)))
    assert tail_lines(f, 10, since) == ["line 998", "line 999"]
