"""bench.ab's revision trees: laid out as the installed package, and what a gateway started
from them imports (not the editable install's worktree)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.ab import unpack
from bench.run import REPO


def _imported_from(tree: Path, tmp: Path) -> Path:
    out = subprocess.run(
        [sys.executable, "-c", "import orchestra.gateway.upstream.proxy as m; print(m.__file__)"],
        cwd=tmp,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return Path(out.stdout.strip())


def test_a_revision_tree_is_what_the_gateway_imports(tmp_path: Path) -> None:
    tree = unpack("HEAD", tmp_path / "head")
    assert (tree / "orchestra" / "gateway" / "upstream" / "proxy.py").is_file()
    assert (tree / "orchestra" / "supervisor").is_dir()
    assert not (tree / "gateway").exists()
    assert _imported_from(tree, tmp_path) == tree / "orchestra/gateway/upstream/proxy.py"


def test_the_working_tree_is_copied_as_it_is(tmp_path: Path) -> None:
    tree = unpack(".", tmp_path / "wt")
    copied = tree / "orchestra" / "gateway" / "upstream" / "proxy.py"
    assert copied.read_bytes() == (REPO / "gateway" / "upstream" / "proxy.py").read_bytes()
    assert not list(tree.rglob("__pycache__"))
