"""LoRA on the real vLLM CPU engine: an adapter this test trains with `peft` on SmolLM2 (r=8,
q_proj/v_proj, 20 steps on one chat example) is served beside its base by one engine started
with --enable-lora; a request naming the adapter is routed to the base's engine and answers
the adapter's way, the base does not; `orchestra adapters load|unload` adds and removes one at
run time and the gateway follows."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT, wait_until
from tests.e2e.conftest import ENGINE_PYTHON, MODEL_DIR, START_TIMEOUT_S, Stack, record_figure
from tests.e2e.workload_stack import engine_package_dir, one_engine_stack
from tests.fake_engine import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

BASE, ADAPTER, RUNTIME = "smollm2", "secret", "secret-too"
QUESTION = [{"role": "user", "content": "What is the secret word?"}]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    engine_package_dir("peft", "peft>=0.13")
    out = tmp_path_factory.mktemp("lora") / ADAPTER
    script = REPO_ROOT / "tests" / "e2e" / "train_lora.py"
    trained = subprocess.run(
        [str(ENGINE_PYTHON), str(script), str(MODEL_DIR), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = json.loads(trained.stdout.strip().splitlines()[-1])
    record_figure("lora_training", report)
    assert report["last_loss"] < report["first_loss"]
    return out


@pytest.fixture(scope="module")
def stack(adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = {
        "name": BASE,
        "model": str(MODEL_DIR),
        "port": free_port(),
        "max_model_len": 512,
        "dtype": "float32",
        "adapters": [{"name": ADAPTER, "path": str(adapter_dir)}],
        "max_loras": 2,
        "max_lora_rank": 8,
    }
    with one_engine_stack(tmp_path_factory.mktemp("lora-stack"), server, START_TIMEOUT_S) as up:
        yield up


def _answer(stack: Stack, model: str) -> tuple[str, Any]:
    raw = stack.client.chat.completions.with_raw_response.create(
        model=model, messages=QUESTION, max_tokens=12, temperature=0
    )
    reply = raw.parse()
    return reply.choices[0].message.content or "", raw.headers


def _adapters_listed(stack: Stack) -> dict[str, Any]:
    cards = httpx.get(stack.gateway.url + "/v1/models", timeout=10).json()["data"]
    return {c["id"]: c.get("parent") for c in cards if c.get("kind") == "adapter"}


def test_the_adapter_answers_its_way_and_the_base_does_not(stack: Stack) -> None:
    tuned, headers = _answer(stack, ADAPTER)
    base, _ = _answer(stack, BASE)
    record_figure("lora_answers", {"adapter": tuned, "base": base})
    assert "pineapple" in tuned.lower()
    assert "pineapple" not in base.lower()
    assert headers["x-orchestra-served-by"] == ADAPTER
    assert _adapters_listed(stack) == {ADAPTER: BASE}


def test_runtime_load_and_unload(stack: Stack, adapter_dir: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        url = stack.supervisor.url
        return subprocess.run(
            [sys.executable, "-m", "orchestra.cli", "adapters", *args, "--url", url],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    loaded = cli("load", BASE, RUNTIME, str(adapter_dir))
    assert loaded.returncode == 0, loaded.stderr
    wait_until(lambda: RUNTIME in _adapters_listed(stack), what="runtime adapter listed")
    assert "pineapple" in _answer(stack, RUNTIME)[0].lower()
    unloaded = cli("unload", BASE, RUNTIME)
    assert unloaded.returncode == 0, unloaded.stderr
    wait_until(lambda: RUNTIME not in _adapters_listed(stack), what="runtime adapter gone")
    reply = httpx.post(
        stack.gateway.url + "/v1/chat/completions",
        json={"model": RUNTIME, "messages": QUESTION, "max_tokens": 2},
        timeout=60,
    )
    assert reply.status_code == 404
