"""Headless Chromium for the console tests: Debian's `chromium` (installed with apt-get when
missing, like the Prometheus test) driven by Playwright. Playwright's own browser downloads
are never used: the launch names /usr/bin/chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REPO = Path(__file__).resolve().parents[3]


def install_chromium() -> str | None:
    """None when Chromium and Playwright are there (installed if needed), else why not."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the Python package playwright is missing (pip install -e '.[dev]')"
    if Path(CHROMIUM).exists():
        return None
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return "chromium is not installed and apt-get as root is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = subprocess.run(
        ["apt-cache", "policy", "chromium"], capture_output=True, text=True, check=False
    )
    if "Candidate: (none)" in policy.stdout or "Candidate" not in policy.stdout:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, check=False)
    out = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    if Path(CHROMIUM).exists():
        return None
    return f"apt-get install chromium failed: {out.stderr[-500:]}"


def output_dir(name: str) -> Path:
    """Where a test keeps what it saw (screenshots): $ORCHESTRA_TEST_OUTPUT/NAME, else
    test-output/NAME in the repository (git-ignored)."""
    base = os.environ.get("ORCHESTRA_TEST_OUTPUT")
    path = (Path(base) if base else REPO / "test-output") / name
    path.mkdir(parents=True, exist_ok=True)
    return path
