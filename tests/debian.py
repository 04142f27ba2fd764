"""Debian packages that tests (and bench) need, installed with apt-get when missing.

CI runs on a fresh machine as root: a test that needs a real Prometheus, redis-server or nginx
installs it itself. The package's own service is kept from starting (policy-rc.d), so nothing
listens on the package's default port behind the test's back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=240")  # seconds, within the install's 600 s bound


def apt_install(package: str, *binaries: str) -> str | None:
    """None once every one of `binaries` is on PATH (installing `package` if needed), else a
    reason to skip."""
    if all(shutil.which(b) for b in binaries):
        return None
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return f"{package} is not installed and apt-get as root is not available"
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
            # Another test (or worker) installing at the same time holds dpkg's lock: wait for it.
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *LOCK_WAIT, package],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
    finally:
        if created:
            rc_d.unlink()
    if all(shutil.which(b) for b in binaries):
        return None
    return f"apt-get install {package} failed: {out.stderr[-500:]}"
