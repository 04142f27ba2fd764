"""LoRA adapters with the supervisor and fake engines: launch flags, requests for an adapter
routed to its base's engine, runtime load/unload (`orchestra adapters`) seen by the gateway."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.config import parse_config
from orchestra.supervisor.launch import build_argv, build_env
from tests.conftest import REPO_ROOT, GatewayProcess, wait_until
from tests.fake_engine import free_port
from tests.integration.supervisor.helpers import SupervisorProcess, config_dict, server

pytestmark = pytest.mark.timeout(90)


def _config(tmp: Path) -> dict[str, Any]:
    base = server("base", tmp, adapters=[{"name": "sql", "path": str(tmp / "sql")}], max_loras=4)
    config = config_dict(tmp, [base, server("plain", tmp)])
    config["gateway"] = {"host": "127.0.0.1", "port": free_port(), "routing_refresh_s": 0.2}
    return config


def test_launch_flags(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path))
    base, plain = config.servers
    argv = build_argv(config.engine, base.model_copy(update={"max_lora_rank": 8}), 9000)
    at = argv.index("--enable-lora")
    assert argv[at : at + 7] == [
        "--enable-lora", "--max-loras", "4", "--max-lora-rank", "8",
        "--lora-modules", f"sql={tmp_path / 'sql'}",
    ]  # fmt: skip
    assert build_env(config.engine, base, "base")["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "--enable-lora" not in build_argv(config.engine, plain, 9001)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[SupervisorProcess, GatewayProcess]]:
    config = _config(tmp_path)
    supervisor = SupervisorProcess(config, tmp_path).start()
    try:
        wait_until(
            lambda: all(m["state"] == "ready" for m in supervisor.models().values()),
            timeout=30,
            what="models ready",
        )
        with GatewayProcess(config) as gateway:
            yield supervisor, gateway
    finally:
        supervisor.stop()


def _chat(gateway: GatewayProcess, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)


def _cli(supervisor: SupervisorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli", "adapters", *args, "--url", supervisor.url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _listed(gateway: GatewayProcess) -> dict[str, Any]:
    cards = httpx.get(gateway.url + "/v1/models", timeout=5).json()["data"]
    return {c["id"]: c.get("parent") for c in cards if c.get("kind") == "adapter"}


def test_adapter_requests_go_to_the_base_and_runtime_loading(
    stack: tuple[SupervisorProcess, GatewayProcess], tmp_path: Path
) -> None:
    supervisor, gateway = stack
    reply = _chat(gateway, "sql")
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "sql"
    assert reply.json()["choices"][0]["message"]["content"] == "sql-tok0 sql-tok1"
    assert reply.headers["x-orchestra-served-by"] == "sql"
    assert _chat(gateway, "base").json()["choices"][0]["message"]["content"] == "tok0 tok1"
    assert _listed(gateway) == {"sql": "base"}
    assert supervisor.models()["base"]["adapters"] == ["sql"]

    loaded = _cli(supervisor, "load", "base", "chat", str(tmp_path / "chat"))
    assert loaded.returncode == 0, loaded.stderr
    assert "sql, chat" in loaded.stdout
    wait_until(lambda: _listed(gateway) == {"sql": "base", "chat": "base"}, what="chat listed")
    assert _chat(gateway, "chat").json()["choices"][0]["message"]["content"] == (
        "chat-tok0 chat-tok1"
    )

    again = _cli(supervisor, "load", "base", "chat", str(tmp_path / "chat"))
    assert again.returncode == 1
    assert "already been loaded" in again.stderr

    unloaded = _cli(supervisor, "unload", "base", "chat")
    assert unloaded.returncode == 0, unloaded.stderr
    wait_until(lambda: _listed(gateway) == {"sql": "base"}, what="chat gone")
    assert _chat(gateway, "chat").status_code == 404

    refused = _cli(supervisor, "load", "plain", "x", str(tmp_path / "x"))
    assert refused.returncode == 1
    assert "not started with LoRA" in refused.stderr
