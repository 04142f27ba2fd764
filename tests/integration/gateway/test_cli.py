"""`python -m orchestra.gateway --config FILE` as a user runs it: bad configs fail at start
(exit 2, the YAML path on stderr), the seed file loads unchanged, and `ORCHESTRA_*` overrides
apply."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from orchestra.gateway import __main__ as gateway_main
from tests.conftest import REPO_ROOT, SEED_CONFIG, GatewayProcess, fast_gateway_section
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)


def _run_gateway(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ORCHESTRA_")}
    return subprocess.run(
        [sys.executable, "-m", "orchestra.gateway", "--config", str(config)],
        cwd=REPO_ROOT,
        env={**clean_env, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bad_config_fails_at_start_naming_the_yaml_path(tmp_path: Path) -> None:
    data: dict[str, Any] = yaml.safe_load(SEED_CONFIG.read_text())
    data["servers"][0]["tensor_parallel_size"] = "x"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = _run_gateway(bad, ORCHESTRA_GATEWAY__PORT=str(free_port()))
    assert result.returncode == 2
    assert "servers[0].tensor_parallel_size" in result.stderr
    assert str(bad) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "cannot read config"),
        ("servers: [\n", "not valid YAML"),
        ("gateway:\n  prot: 1\n", "gateway.prot"),
    ],
    ids=["missing", "not-yaml", "unknown-key"],
)
def test_unusable_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, fragment: str
) -> None:
    """In-process (`gateway.__main__.run`): the same code path, without a subprocess each."""
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text)
    assert gateway_main.run(str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("orchestra gateway: ")
    assert fragment in err


def test_bad_env_override_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORCHESTRA_GATEWAY__PORT", "eighty")
    assert gateway_main.run(str(SEED_CONFIG)) == 2
    assert "gateway.port" in capsys.readouterr().err


def test_seed_file_serves_unchanged() -> None:
    """The user's file as is (ports from the environment): every model listed, none ready
    because no supervisor answers, so a request gets a clean 503."""
    port = free_port()
    env = {"ORCHESTRA_GATEWAY__PORT": str(port), "ORCHESTRA_SUPERVISOR__PORT": str(free_port())}
    with GatewayProcess(config_path=SEED_CONFIG, env=env, port=port) as gw:
        cards = httpx.get(gw.url + "/v1/models").json()["data"]
        assert [c["id"] for c in cards] == [
            "deepseek-coder-33b",
            "codellama-34b",
            "mistral-7b",
            "llama-3.1-70b",
            "qwen-2.5-14b",
            "phi-3-mini",
        ]
        assert all(c["managed"] is True and c["state"] == "unknown" for c in cards)
        health = gw.health()
        assert health["status"] == "degraded"
        assert set(health["models"].values()) == {"unknown"}
        body = {"model": "mistral-7b", "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "no_upstream_available"
        assert "mistral-7b" in reply.json()["error"]["message"]
        # Refused before any upstream: still a request the error-rate rules must see.
        assert gw.metric("orchestra_requests_total", model="mistral-7b", status="503") == 1


def test_env_port_override_keeps_the_other_yaml_keys() -> None:
    yaml_port, env_port = free_port(), free_port()
    with FakeEngineProcess(name="m1") as engine:
        config = {
            "gateway": fast_gateway_section(yaml_port, max_body_bytes=512),
            "servers": [{"name": "m1", "url": engine.url}],
        }
        env = {"ORCHESTRA_GATEWAY__PORT": str(env_port)}
        with GatewayProcess(config, env=env, port=env_port) as gw:
            assert gw.config is not None and gw.config["gateway"]["port"] == yaml_port
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{yaml_port}/health")
            small = {"model": "m1", "prompt": "x", "max_tokens": 1}
            assert httpx.post(gw.url + "/v1/completions", json=small).status_code == 200
            big = {**small, "prompt": "x" * 1024}
            # max_body_bytes from the same YAML section still applies.
            assert httpx.post(gw.url + "/v1/completions", json=big).status_code == 413
