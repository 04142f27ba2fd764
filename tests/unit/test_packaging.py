"""The package layout: every package is installed, and the import graph has no cycle.

The graph is read from the source (every `import`, at any depth, TYPE_CHECKING blocks too): a
cycle hidden in a function body or behind TYPE_CHECKING is still a cycle to a reader.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where each installed package lives (pyproject's package-dir).
FOLDERS = {
    "orchestra.gateway": "gateway",
    "orchestra.supervisor": "supervisor",
    "orchestra.engines": "engines",
    "orchestra": "orchestra",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    for name, folder in FOLDERS.items():
        if parts[0] == folder:
            return ".".join([name, *parts[1:]])
    raise AssertionError(path)


def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for folder in FOLDERS.values()
        for path in (ROOT / folder).rglob("*.py")
    }


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        for target in targets:
            # the module itself, else the deepest known package above it
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    known = set(sources)
    return {m: _imports(m, p, known) for m, p in sources.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def _is_package(module: str) -> bool:
    return _sources()[module].name == "__init__.py"


def test_no_import_cycle() -> None:
    graph = _graph()
    # A package's __init__ importing its own submodules is how packages re-export; an edge
    # from a submodule to its parent package's __init__ is then not a cycle of ideas, but it
    # still is one for an importer, so both count.
    assert _cycles(graph) == []


def test_supervisor_imports_nothing_of_the_gateway() -> None:
    graph = _graph()
    for module, targets in graph.items():
        if module.startswith("orchestra.supervisor"):
            bad = sorted(t for t in targets if t.startswith("orchestra.gateway"))
            assert bad == [], f"{module} imports {bad}"


def test_every_package_folder_is_installed() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {m for m in _sources() if _is_package(m)}
    assert on_disk == listed


def test_no_symlink_in_the_packages() -> None:
    links = [p for folder in FOLDERS.values() for p in (ROOT / folder).rglob("*") if p.is_symlink()]
    assert links == []
