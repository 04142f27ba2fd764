"""compose.yaml checked by Compose itself, offline: `docker compose config` where that plugin
runs, else Debian's docker-compose (apt-installed when missing), which validates the file
against the Compose specification's schema without a daemon."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO_ROOT
from tests.debian import apt_install


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker:
        plugin = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if plugin.returncode == 0:
            return [docker, "compose"]
    reason = apt_install("docker-compose", "docker-compose")
    if reason:
        pytest.skip(reason)
    return ["docker-compose"]


@pytest.mark.parametrize("image", [None, "registry.example.com/orchestra:1.0"])
def test_compose_file_is_valid(image: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "IMAGE"} | (
        {"IMAGE": image} if image else {}
    )
    done = subprocess.run(
        [*compose_command(), "-f", str(REPO_ROOT / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"image: {image or 'localhost/orchestra:latest'}" in done.stdout
