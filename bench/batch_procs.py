"""The processes `bench/batch.py` measures with: the real CPU engine (SmolLM2 on vLLM, from
`.venv-engine`) and gateways with a batch store, each in its own session so a kill reaches
all of its children."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from orchestra.health import wait_healthy_sync
from orchestra.lifetime import spawn, stop_group

REPO = Path(__file__).resolve().parents[1]
ENGINE_PY = REPO / ".venv-engine" / "bin" / "python"
MODEL = "smollm2"
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
ENGINE_ARGS = ["--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"]


def free_port() -> int:
    sys.path.insert(0, str(REPO))
    from tests.fake_engine import free_port

    return free_port()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = predicate()
        except httpx.HTTPError:
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout}s")


class Proc:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log.open("wb")
        self.proc = spawn(argv, cwd=REPO, stdout=self.log, env={**os.environ, **(env or {})})

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Stop the group (SIGTERM, then SIGKILL); SIGKILL at once to crash it on purpose."""
        if sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        stop_group(self.proc, 30.0)
        self.log.close()


def start_engine(port: int, tmp: Path) -> Proc:
    argv = [
        str(ENGINE_PY),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(REPO / "models" / "smollm2"),
        "--served-model-name",
        MODEL,
        "--port",
        str(port),
        *ENGINE_ARGS,
    ]
    return Proc(argv, tmp / "engine.log", ENGINE_ENV)


def start_gateway(engine_url: str, store: Path, tmp: Path, name: str) -> tuple[Proc, str]:
    port = free_port()
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        json.dumps(
            {
                "servers": [{"name": MODEL, "url": engine_url}],
                "gateway": {
                    "host": "127.0.0.1",
                    "port": port,
                    "timeouts": {"first_byte_s": 300, "total_s": 600},
                },
                "batch": {"dir": str(store), "poll_s": 0.1, "max_concurrency": 32},
            }
        )
    )
    proc = Proc(
        [sys.executable, "-m", "orchestra.gateway", "--config", str(cfg)], tmp / f"{name}.log"
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy_sync(url, timeout_s=30, interval_s=0.2, probe_timeout_s=2)
    return proc, url
