"""The console tests' browser (Debian's Chromium, `browser.install_chromium`) and their stack."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayProcess, wait_until
from tests.integration.supervisor.helpers import SupervisorProcess

from .browser import install_chromium


@pytest.fixture(scope="module")
def chromium() -> None:
    """Chromium and Playwright are there, or the test skips with the reason."""
    why = install_chromium()
    if why:
        pytest.skip(why)


@contextmanager
def alpha_ready(
    config: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[SupervisorProcess, GatewayProcess]]:
    """A supervisor and a gateway for `config`, once its model `alpha` is ready at both."""
    supervisor = SupervisorProcess(config, tmp_path).start()
    try:
        wait_until(lambda: supervisor.models()["alpha"]["state"] == "ready", 20, what="alpha")
        with GatewayProcess(config) as gateway:
            gateway.wait_ready("alpha", timeout=20)
            yield supervisor, gateway
    finally:
        supervisor.stop()
