"""Debian packages that tests (and bench) need, installed with apt-get when missing.

CI runs on a fresh machine as root: a test that needs a real Prometheus, redis-server or nginx
installs it itself. The package's own service is kept from starting (policy-rc.d), so nothing
listens on the package's default port behind the test's back.

Tests run in parallel (pytest-xdist workers), so installs are serialised by a file lock: apt's
own lock covers dpkg but not `apt-get update` nor the policy-rc.d file, which one install must
not delete under another.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=240")  # seconds, within the install's 600 s bound
LOCK_FILE = Path(tempfile.gettempdir()) / "orchestra-tests-apt.lock"


def apt_install(package: str, *binaries: str, timeout_s: float = 600.0) -> str | None:
    """None once every one of `binaries` is on PATH (installing `package` if needed, within
    `timeout_s`), else a reason to skip."""
    if all(shutil.which(b) for b in binaries):
        return None
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return f"{package} is not installed and apt-get as root is not available"
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if all(shutil.which(b) for b in binaries):  # another worker installed it meanwhile
            return None
        return _install(package, binaries, timeout_s)


def _install(package: str, binaries: tuple[str, ...], timeout_s: float) -> str | None:
    policy = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, check=False
    )
    if "Candidate: (none)" in policy.stdout or "Candidate" not in policy.stdout:
        subprocess.run(
            ["apt-get", "update", "-q", *LOCK_WAIT], capture_output=True, timeout=300, check=False
        )
    rc_d = Path("/usr/sbin/policy-rc.d")
    created = not rc_d.exists()
    if created:
        rc_d.write_text("#!/bin/sh\nexit 101\n")
        rc_d.chmod(0o755)
    try:
        out = subprocess.run(
            # Another apt outside this suite (another checkout's tests) may hold dpkg's lock.
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *LOCK_WAIT, package],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
    finally:
        if created:
            rc_d.unlink()
    if all(shutil.which(b) for b in binaries):
        return None
    return f"apt-get install {package} failed: {out.stderr[-500:]}"
