"""The two-node Ray cluster the Ray tests share (`ray_nodes.py`): a fresh one per test, since
each test takes a node down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .ray_nodes import RayNodes, ray_nodes


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[RayNodes]:
    with ray_nodes(tmp_path, worker=True) as nodes:
        yield nodes
