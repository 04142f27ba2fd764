"""An optional extra of pyproject.toml that tests need, pip-installed when missing.

As tests/debian.py does for Debian packages: a test installs what it needs on a fresh machine
and skips only when that cannot be done (no registry, no wheel for this platform).
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
INSTALL_TIMEOUT_S = 600.0


def extra_requirements(extra: str) -> list[str]:
    """The requirements pyproject.toml lists for `extra` (the one place they are written)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return list(project["optional-dependencies"][extra])


def pip_install_extra(extra: str, *modules: str) -> str | None:
    """None once every one of `modules` imports (installing the extra's requirements into this
    interpreter's environment if needed), else a reason to skip."""
    if all(importlib.util.find_spec(m) is not None for m in modules):
        return None
    requirements = extra_requirements(extra)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *requirements,
        ],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    importlib.invalidate_caches()
    if all(importlib.util.find_spec(m) is not None for m in modules):
        return None
    return f"pip install {' '.join(requirements)} failed: {out.stderr[-500:]}"


def require_extra(extra: str, *modules: str) -> None:
    """At a test module's top: install the extra when missing, else skip the module (why)."""
    reason = pip_install_extra(extra, *modules)
    if reason is not None:
        pytest.skip(reason, allow_module_level=True)
