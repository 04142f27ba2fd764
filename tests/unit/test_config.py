"""The shared config model: the user's seed file loads unchanged, errors name the YAML path,
and `ORCHESTRA_*` environment variables override single keys without dropping their siblings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestra.config import (
    ConfigError,
    OrchestraConfig,
    ServerConfig,
    format_loc,
    load_config,
    parse_config,
)
from tests.conftest import SEED_CONFIG


@pytest.fixture(autouse=True)
def _no_orchestra_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.upper().startswith("ORCHESTRA_"):
            monkeypatch.delenv(key)
    yield


def _seed_data() -> dict[str, Any]:
    return dict(yaml.safe_load(SEED_CONFIG.read_text()))


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml")
    return str(info.value)


# ---- the seed file ------------------------------------------------------------------------------
def test_seed_fixture_loads_unchanged() -> None:
    config = load_config(SEED_CONFIG)
    assert [s.name for s in config.servers] == ["deepseek-coder-33b", "codellama-34b", "mistral-7b"]
    assert [s.name for s in config.rotation_pool] == ["llama-3.1-70b", "qwen-2.5-14b", "phi-3-mini"]
    first = config.servers[0]
    assert first.model == "/mnt/nvme/models/deepseek-coder-33b"
    assert (first.tensor_parallel_size, first.gpu_ids, first.port) == (3, [0, 1, 2], 8001)
    assert (first.max_model_len, first.dtype) == (4096, "float16")
    assert config.rotation_pool[2].max_model_len == 128000
    assert config.rotation_pool[0].gpu_ids is None
    assert all(s.managed for s in config.all_servers)
    assert [s.port for s in config.all_servers] == list(range(8001, 8007))


def test_seed_fixture_gets_defaults_for_new_sections() -> None:
    config = load_config(SEED_CONFIG)
    assert config.gateway.port == 8000 and config.gateway.host == "127.0.0.1"
    assert config.supervisor.port == 8100
    assert config.fallback.ollama is None
    assert config.supervisor_url == "http://127.0.0.1:8100"


def test_seed_helpers() -> None:
    config = load_config(SEED_CONFIG)
    assert config.all_servers[3].name == "llama-3.1-70b"
    assert config.server("phi-3-mini") is config.rotation_pool[2]
    assert config.server("nope") is None
    assert config.is_hot_at_start("mistral-7b")
    assert not config.is_hot_at_start("phi-3-mini")


def test_the_repo_config_loads() -> None:
    repo_config = Path(__file__).resolve().parents[2] / "configs" / "vllm_config.yaml"
    assert isinstance(load_config(repo_config), OrchestraConfig)


# ---- errors name the YAML path ----------------------------------------------------------------
def test_bad_tensor_parallel_size_names_its_path() -> None:
    data = _seed_data()
    data["servers"][0]["tensor_parallel_size"] = "x"
    message = _error(data)
    assert "test.yaml" in message
    assert "servers[0].tensor_parallel_size" in message
    assert "'x'" in message


def test_bad_value_in_rotation_pool_names_its_path() -> None:
    data = _seed_data()
    data["rotation_pool"][1]["max_model_len"] = 0
    assert "rotation_pool[1].max_model_len" in _error(data)


def test_unknown_key_is_refused_with_its_path() -> None:
    data = _seed_data()
    data["servers"][2]["tensor_paralel_size"] = 1
    message = _error(data)
    assert "servers[2].tensor_paralel_size" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_top_level_section_is_refused() -> None:
    assert "gatway" in _error({"gatway": {"port": 1}})


def test_nested_gateway_error_path() -> None:
    message = _error({"gateway": {"timeouts": {"first_byte_s": -1}}})
    assert "gateway.timeouts.first_byte_s" in message


def test_missing_name_is_reported() -> None:
    assert "servers[0].name: Field required" in _error({"servers": [{"model": "/m"}]})


def test_several_errors_are_all_listed() -> None:
    message = _error({"servers": [{"name": "a", "model": "/m", "dtype": 3, "port": 0}]})
    assert "servers[0].dtype" in message and "servers[0].port" in message


def test_duplicate_names_and_ports() -> None:
    dup_name = _error(
        {"servers": [{"name": "a", "model": "/m"}], "rotation_pool": [{"name": "a", "model": "/n"}]}
    )
    assert "rotation_pool[0].name: 'a' is already used at servers[0]" in dup_name
    dup_port = _error(
        {
            "servers": [
                {"name": "a", "model": "/m", "port": 9},
                {"name": "b", "model": "/n", "port": 9},
            ]
        }
    )
    assert "servers[1].port: 9 is already used by servers[0]" in dup_port


def test_replica_ports_collide_with_server_ports() -> None:
    message = _error(
        {
            "servers": [
                {"name": "a", "model": "/m", "port": 9001},
                {"name": "b", "model": "/n", "replicas": [{"port": 9002}, {"port": 9001}]},
            ]
        }
    )
    assert "servers[1].port: 9001 is already used by servers[0]" in message


def test_gpu_ids_must_match_tensor_parallel_size() -> None:
    message = _error(
        {"servers": [{"name": "a", "model": "/m", "tensor_parallel_size": 2, "gpu_ids": [0]}]}
    )
    assert "servers[0]" in message and "tensor_parallel_size (2)" in message


@pytest.mark.parametrize(
    ("server", "fragment"),
    [
        ({"name": "a"}, "needs `model`"),
        ({"name": "a", "url": "http://x", "replicas": [{"url": "http://y"}]}, "not both"),
        ({"name": "a", "replicas": [{"url": "http://y"}, {}]}, "all have `url` or none"),
        ({"name": "a", "replicas": [{}]}, "need the server's `model`"),
        ({"name": "a", "url": "ftp://x"}, "servers[0].url"),
        ({"name": "a", "model": "/m", "balancing": "random"}, "servers[0].balancing"),
    ],
)
def test_server_shape_errors(server: dict[str, Any], fragment: str) -> None:
    message = _error({"servers": [server]})
    assert fragment in message
    assert "servers[0]" in message


def test_supervisor_off_loopback_needs_a_token() -> None:
    assert "admin_token is required" in _error({"supervisor": {"host": "0.0.0.0"}})
    config = parse_config({"supervisor": {"host": "0.0.0.0", "admin_token": "t", "port": 9100}})
    assert config.supervisor_url == "http://127.0.0.1:9100"


def test_managed_and_unmanaged_servers() -> None:
    assert ServerConfig(name="a", model="/m").managed
    assert not ServerConfig(name="a", url="http://x/").managed
    assert ServerConfig(name="a", url="http://x/").url == "http://x"
    assert not ServerConfig(name="a", replicas=[{"url": "http://x"}]).managed  # type: ignore[list-item]
    assert ServerConfig(name="a", model="/m", replicas=[{"port": 9}]).managed  # type: ignore[list-item]


def test_format_loc() -> None:
    assert format_loc(("servers", 0, "tensor_parallel_size")) == "servers[0].tensor_parallel_size"
    assert format_loc(("gateway", "timeouts", "connect_s")) == "gateway.timeouts.connect_s"
    assert format_loc(("servers", 1, "function-after[_managed_or_not()]")) == "servers[1]"
    assert format_loc(()) == ""


# ---- files --------------------------------------------------------------------------------------
def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("servers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad_yaml)
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(a_list)


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    config = load_config(empty)
    assert config.servers == [] and config.gateway.port == 8000


def test_bad_file_error_names_the_file_and_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    data = _seed_data()
    data["servers"][0]["tensor_parallel_size"] = "x"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "servers[0].tensor_parallel_size" in str(info.value)


# ---- environment overrides ----------------------------------------------------------------------
def test_env_overrides_gateway_port_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_GATEWAY__PORT", "9123")
    config = parse_config(
        {
            **_seed_data(),
            "gateway": {
                "host": "0.0.0.0",
                "port": 8000,
                "max_body_bytes": 1024,
                "timeouts": {"first_byte_s": 3},
            },
        }
    )
    assert config.gateway.port == 9123
    assert config.gateway.host == "0.0.0.0"
    assert config.gateway.max_body_bytes == 1024
    assert config.gateway.timeouts.first_byte_s == 3
    assert config.gateway.timeouts.connect_s == 2.0  # default kept
    assert len(config.servers) == 3  # other sections untouched


def test_env_overrides_a_nested_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_GATEWAY__TIMEOUTS__FIRST_BYTE_S", "7.5")
    config = parse_config({"gateway": {"port": 9000, "timeouts": {"connect_s": 3}}})
    assert config.gateway.timeouts.first_byte_s == 7.5
    assert config.gateway.timeouts.connect_s == 3
    assert config.gateway.port == 9000


def test_env_override_without_yaml_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_GATEWAY__PORT", "9124")
    config = load_config(SEED_CONFIG)
    assert config.gateway.port == 9124
    assert config.gateway.host == "127.0.0.1"


def test_bad_env_override_names_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_GATEWAY__PORT", "not-a-port")
    assert "gateway.port" in _error({})


def test_env_is_case_insensitive_on_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("orchestra_supervisor__port", "9200")
    assert parse_config({}).supervisor.port == 9200


# ---- tracing ------------------------------------------------------------------------------------


def test_tracing_is_off_when_absent_and_read_when_given() -> None:
    assert parse_config({}).tracing is None
    tracing = parse_config({"tracing": {"endpoint": "http://collector:4318/"}}).tracing
    assert tracing is not None
    assert tracing.traces_url == "http://collector:4318/v1/traces"
    assert (tracing.sample_ratio, tracing.service_name) == (1.0, "orchestra-gateway")


def test_tracing_errors_name_their_path() -> None:
    message = _error({"tracing": {"endpoint": "collector:4318", "sample_ratio": 1.5}})
    assert "tracing.endpoint: url must start with http://" in message
    assert "tracing.sample_ratio:" in message
    assert "tracing.endpoint: Field required" in _error({"tracing": {"sample_ratio": 0.5}})
