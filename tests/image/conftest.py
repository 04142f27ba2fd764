"""The image test runs alone (`make test-image`, `pytest tests/image -m image`): a plain
`pytest` (`make test`) collects it but skips it, so the suite keeps its own time.

A SIGTERM to pytest while it runs becomes an exception, so the fixtures' teardown stops the
container and the podman processes started here (pytest-timeout's own timeout already does).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest


class Terminated(Exception):
    """pytest got SIGTERM."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "image" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the image test runs alone: make test-image")
    for item in items:
        if item.get_closest_marker("image"):
            item.add_marker(skip)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


@pytest.fixture(scope="module", autouse=True)
def sigterm_stops_the_test() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
