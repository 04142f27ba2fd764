"""The fake engine the usage tests share, one per module (its usage is exact)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_engine import FakeEngineProcess


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess("--served-model-name", "m", name="m") as fake:
        yield fake
