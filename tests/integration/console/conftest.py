"""The console tests' browser: Debian's Chromium, installed once (`browser.install_chromium`)."""

from __future__ import annotations

import pytest

from .browser import install_chromium


@pytest.fixture(scope="module")
def chromium() -> None:
    """Chromium and Playwright are there, or the test skips with the reason."""
    why = install_chromium()
    if why:
        pytest.skip(why)
