"""A real PostgreSQL for a test: Debian's `postgresql` (installed with apt-get when missing, as
tests/debian.py does), a new cluster in a temporary folder, on a free port, stopped by the test.

PostgreSQL refuses to run as root: as root (CI), the server runs as the package's `postgres`
user (`setpriv`), with the parent-death signal set after the switch, so a test run that is
killed (timeout, SIGTERM) takes its server with it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.lifetime import spawn, stop_group
from tests.conftest import wait_until
from tests.debian import apt_install
from tests.fake_engine import free_port


def _bindir() -> Path | None:
    """Debian's server binaries (/usr/lib/postgresql/<version>/bin), the newest version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version)
    return Path(found[-1]).parent if found else None


def _version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return [
        "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
        "--pdeathsig=SIGTERM", *argv,
    ]  # fmt: skip


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    """A `postgresql://` URL of a new, empty database; skips when none can be had."""
    if _bindir() is None:
        why = apt_install("postgresql", "pg_ctlcluster")
        if why:
            pytest.skip(why)
    bindir = _bindir()
    if bindir is None:
        pytest.skip("postgresql installed, but no /usr/lib/postgresql/*/bin/postgres")
    root = Path(tempfile.mkdtemp(prefix="orchestra-pg-"))
    data = root / "data"
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "orchestra", "-A", "trust"]
        subprocess.run(
            _as_postgres([*initdb, "--no-sync"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root)]
        server = spawn(
            _as_postgres([*argv, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]),
            stdout=subprocess.DEVNULL,
        )
        try:
            ready = [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
            wait_until(
                lambda: subprocess.run(ready, capture_output=True, check=False).returncode == 0,
                timeout=60,
                interval=0.1,
                what="postgres accepting connections",
            )
            yield f"postgresql://orchestra@127.0.0.1:{port}/postgres"
        finally:
            stop_group(server, 10.0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
