"""A real Redis for tests and benchmarks: Debian's `redis-server` (installed with apt-get when
missing) on a free port, without persistence, stopped with its process group on exit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

from tests.conftest import wait_until
from tests.debian import apt_install
from tests.fake_engine import free_port


def install_redis() -> str | None:
    """None when redis-server is there (installed if needed), else why not."""
    return apt_install("redis-server", "redis-server")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A running redis-server's URL (call `install_redis` first)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )

    def answers() -> bool:
        probe = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
        )
        return probe.stdout.strip() == "PONG"

    try:
        wait_until(answers, what="redis-server up")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
