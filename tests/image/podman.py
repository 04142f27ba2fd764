"""Podman as the image test drives it: the CLI with this folder's containers.conf, a build
through scripts/image.sh (timed), and one container run attached, whose stop is checked.

Every podman process is started with `orchestra.lifetime.spawn` (its own session, SIGTERM when
the test process dies), and the container is attached (`podman run`, not `-d`): if the test is
killed, `podman run` gets SIGTERM, forwards it to the container (podman's signal proxy) and
removes it (`--rm`) once it has stopped.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestra.lifetime import spawn, stop_group
from tests.conftest import REPO_ROOT
from tests.debian import apt_install

CONTAINERS_CONF = Path(__file__).resolve().parent / "containers.conf"
IMAGE_SCRIPT = REPO_ROOT / "scripts" / "image.sh"
BASE_IMAGE = "localhost/debian-python:bookworm"
CLI_TIMEOUT_S = 120.0  # one podman command that is not a build nor a run
BUILD_TIMEOUT_S = 3000.0  # a cold build on 2 busy cores: the engine venv, the model conversion


def env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), "BASE_IMAGE": BASE_IMAGE}


def podman(*args: str, timeout_s: float = CLI_TIMEOUT_S, check: bool = True) -> str:
    """One podman command's stdout; its stderr in the error when `check` and it fails."""
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout_s, env=env()
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def cannot_run() -> str | None:
    """Why podman cannot build and run containers here (None: it can), after installing
    podman, runc and mmdebstrap with apt-get where they are missing."""
    for package in ("podman", "runc", "mmdebstrap"):
        reason = apt_install(package, package)
        if reason:
            return reason
    script = subprocess.run(
        ["bash", str(IMAGE_SCRIPT), "base"], capture_output=True, text=True, env=env(), timeout=900
    )
    if script.returncode != 0:
        return f"no base image from mmdebstrap: {script.stderr[-800:]}"
    probe = subprocess.run(
        ["podman", "run", "--rm", "--network=host", BASE_IMAGE, "true"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=CLI_TIMEOUT_S,
    )
    if probe.returncode != 0:
        return f"podman cannot run a container here: {probe.stderr[-800:]}"
    return None


def run_logged(
    argv: Sequence[str], log: Path, timeout_s: float, extra_env: Mapping[str, str]
) -> int:
    """`argv` to completion with its output in `log`; stopped (its whole group) if this test
    is interrupted or `timeout_s` passes."""
    with log.open("ab") as out:
        proc = spawn(argv, stdout=out, env={**env(), **extra_env})
    try:
        return proc.wait(timeout_s)
    finally:
        stop_group(proc, 30.0)


def build(context: Path, image: str, log: Path) -> float:
    """Seconds `scripts/image.sh build` took to build `context` on the mmdebstrap base."""
    started = time.monotonic()
    extra = {
        "IMAGE": image,
        "IMAGE_TOOL": "podman",
        "IMAGE_BUILD_ARGS": f"--build-arg BASE={BASE_IMAGE}",
    }
    rc = run_logged(["bash", str(IMAGE_SCRIPT), "build", str(context)], log, BUILD_TIMEOUT_S, extra)
    seconds = time.monotonic() - started
    assert rc == 0, f"the build failed ({rc}):\n{tail(log)}"
    return seconds


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


class Container:
    """`podman run --rm --network=host` attached, as a child of the test (see the module doc)."""

    def __init__(
        self, image: str, name: str, *, url: str, log: Path, args: Sequence[str], cmd: Sequence[str]
    ) -> None:
        self.name, self.url, self.log = name, url, log
        argv = ["podman", "run", "--rm", "--name", name, "--network=host", *args, image, *cmd]
        with log.open("ab") as out:
            self.client = spawn(argv, stdout=out, env=env())

    def exited(self) -> int | None:
        return self.client.poll()

    def exec(self, *cmd: str) -> str:
        return podman("exec", self.name, *cmd)

    def host_pids(self) -> set[int]:
        """Every process of the container, as host pids (`podman top`'s hpid)."""
        out = podman("top", self.name, "hpid")
        return {int(line) for line in out.split()[1:] if line.strip().isdigit()}

    def stop(self, grace_s: float) -> tuple[float, int]:
        """`podman stop -t grace_s`: the seconds it took and the container's exit status."""
        started = time.monotonic()
        podman("stop", "-t", str(int(grace_s)), self.name, timeout_s=grace_s + CLI_TIMEOUT_S)
        rc = self.client.wait(CLI_TIMEOUT_S)  # `podman run` exits with the container's status
        return time.monotonic() - started, rc

    def remove(self) -> None:
        """Whatever is left, gone: the container (stopped first), then the attached client."""
        podman("rm", "--force", "--time", "30", "--ignore", self.name, check=False)
        stop_group(self.client, 30.0)

    def exists(self) -> bool:
        return bool(podman("ps", "--all", "--quiet", "--filter", f"name=^{self.name}$").strip())
