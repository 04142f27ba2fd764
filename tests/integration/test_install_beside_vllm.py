"""Orchestra installs into the venv where vLLM lives without shadowing anything.

vLLM's dependencies (model-hosting-container-standards) install PyPI's `supervisor` package,
whose import name is `supervisor`. Orchestra's folders gateway/ and supervisor/ install as
`orchestra.gateway` and `orchestra.supervisor`, so both packages import side by side.

The test builds a real (non-editable) install of this checkout into a fresh venv next to PyPI's
`supervisor`, then imports both from a directory outside the checkout. Orchestra's own
dependencies come from the test runner's environment through a path entry, so nothing but the
two packages under test is installed.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "models", "logs", "run", "build", "*.egg-info", "__pycache__", ".*_cache"
)

_CHECK = """
import json, supervisor, supervisor.supervisord
import orchestra, orchestra.gateway.app, orchestra.supervisor.manager, orchestra.cli
print(json.dumps({
    "pypi_supervisor": supervisor.__file__,
    "supervisord": supervisor.supervisord.__name__,
    "orchestra_supervisor": orchestra.supervisor.__file__,
    "orchestra_gateway": orchestra.gateway.__file__,
}))
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_orchestra_and_pypi_supervisor_import_side_by_side(tmp_path: Path) -> None:
    import json

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, "supervisor"], tmp_path)
    # A regular (not editable) install of a copy of this checkout (pip builds in the source
    # tree): what a user's `pip install` puts in site-packages. Dependencies come below.
    source = tmp_path / "src"
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    _run([*pip, "--no-deps", str(source)], tmp_path)

    # Orchestra's dependencies (fastapi, aiohttp, ...) from the runner's site-packages, searched
    # after the venv's own: a plain path line, so the runner's editable install is not loaded.
    venv_site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
             tmp_path).strip()
    )  # fmt: skip
    runner_sites = [sysconfig.get_path("purelib"), *site.getsitepackages()]
    (venv_site / "zz_runner_deps.pth").write_text("\n".join(dict.fromkeys(runner_sites)) + "\n")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = json.loads(_run([str(python), "-c", _CHECK], tmp_path, env).strip().splitlines()[-1])
    assert out["pypi_supervisor"].startswith(str(venv_site)), out
    assert out["supervisord"] == "supervisor.supervisord"
    for key in ("orchestra_supervisor", "orchestra_gateway"):
        assert out[key].startswith(str(venv_site / "orchestra")), out
