"""Headless Chromium for the console tests: Debian's `chromium` (installed with apt-get when
missing, like the Prometheus test) driven by Playwright. Playwright's own browser downloads
are never used: the launch names /usr/bin/chromium."""

from __future__ import annotations

import os
from pathlib import Path

from tests.debian import apt_install

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
    return apt_install("chromium", "chromium", timeout_s=900)  # Debian's is CHROMIUM


def output_dir(name: str) -> Path:
    """Where a test keeps what it saw (screenshots): $ORCHESTRA_TEST_OUTPUT/NAME, else
    test-output/NAME in the repository (git-ignored)."""
    base = os.environ.get("ORCHESTRA_TEST_OUTPUT")
    path = (Path(base) if base else REPO / "test-output") / name
    path.mkdir(parents=True, exist_ok=True)
    return path
