"""A model's own `engine:` (not vLLM): its argument list, environment, health path and kind,
and the config errors for vLLM-only features on it (naming the YAML path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.config import ConfigError, parse_config
from orchestra.supervisor.launch import build_specs

OWN = {"kind": "whisper", "command": ["py", "-m", "w"], "model_arg": "--model"}


def _config(tmp_path: Path, **server: object) -> dict[str, object]:
    return {
        "servers": [
            {"name": "llm", "model": "/m/llm"},
            {"name": "stt", "model": "/m/stt", "engine": OWN, **server},
        ],
        "engine": {
            "command": ["vllm", "serve"],
            "extra_args": ["--enforce-eager"],
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
            "log_dir": str(tmp_path),
        },
        "supervisor": {"gpus": [], "state_dir": str(tmp_path)},
    }


def test_its_argv_has_none_of_vllms_flags(tmp_path: Path) -> None:
    config = parse_config(
        _config(tmp_path, extra_args=["--threads", "2"], env={"A": "1"}), "t.yaml"
    )
    specs = build_specs(config)
    own, llm = specs["stt"][0], specs["llm"][0]
    assert own.argv() == [
        "py", "-m", "w", "--model", "/m/stt", "--served-model-name", "stt",
        "--host", "127.0.0.1", "--port", str(own.port), "--threads", "2",
    ]  # fmt: skip
    env = dict(own.base_env)
    assert env["A"] == "1" and "VLLM_CPU_KVCACHE_SPACE" not in env  # engine.env is vLLM's
    assert "--enforce-eager" in llm.argv() and "--dtype" in llm.argv()
    assert (own.health_path, llm.health_path) == ("/health", "/health")
    assert [s.kind for s in config.all_servers] == ["vllm", "whisper"]


def test_its_health_path_and_start_timeout(tmp_path: Path) -> None:
    engine = {**OWN, "health_path": "/ready", "startup_timeout_s": 42}
    data = _config(tmp_path)
    data["servers"][1]["engine"] = engine  # type: ignore[index]
    own = build_specs(parse_config(data, "t.yaml"))["stt"][0]
    assert (own.health_path, own.startup_timeout_s) == ("/ready", 42)


@pytest.mark.parametrize(
    ("field", "value"),
    [("sleep_mode", True), ("tensor_parallel_size", 2), ("max_model_len", 512)],
)
def test_vllm_only_features_are_refused_with_the_path(
    tmp_path: Path, field: str, value: object
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(tmp_path, **{field: value}), "t.yaml")
    assert "servers[1]" in str(info.value) and field in str(info.value)


def test_an_unmanaged_model_has_no_engine(tmp_path: Path) -> None:
    data = _config(tmp_path)
    data["servers"][1] = {"name": "stt", "url": "http://h:1", "engine": OWN}  # type: ignore[index]
    with pytest.raises(ConfigError, match="servers\\[1\\]"):
        parse_config(data, "t.yaml")
