"""Launch specs beyond one machine: pipeline parallel on Ray (head's argv and RAY_ADDRESS),
engines bound off loopback with an --api-key and an advertised URL, the config hash adoption
checks, and the key kept in the state dir."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from orchestra.config import ConfigError, parse_config
from orchestra.supervisor.adoption import engine_api_key
from orchestra.supervisor.launch import build_specs


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_pipeline_parallel_on_ray_head_argv_and_env() -> None:
    config = parse_config(
        {
            "servers": [
                {
                    "name": "llama-70b",
                    "model": "/m/llama-70b",
                    "tensor_parallel_size": 4,
                    "pipeline_parallel_size": 2,
                    "distributed_executor_backend": "ray",
                    "ray_address": "10.0.0.1:6379",
                }
            ]
        }
    )
    spec = build_specs(config)["llama-70b"][0]
    argv = spec.argv()
    assert _flag(argv, "--tensor-parallel-size") == "4"
    assert _flag(argv, "--pipeline-parallel-size") == "2"
    assert _flag(argv, "--distributed-executor-backend") == "ray"
    assert spec.env(None)["RAY_ADDRESS"] == "10.0.0.1:6379"


def test_single_node_argv_has_no_pipeline_or_ray_flags() -> None:
    config = parse_config({"servers": [{"name": "a", "model": "/m/a"}]})
    spec = build_specs(config)["a"][0]
    argv = spec.argv()
    assert "--pipeline-parallel-size" not in argv
    assert "--distributed-executor-backend" not in argv
    assert not any(a.startswith("--api-key") for a in argv)
    assert "RAY_ADDRESS" not in dict(spec.base_env)
    assert spec.url == f"http://127.0.0.1:{spec.port}" and spec.api_key is None


def test_engines_off_loopback_get_a_key_and_the_advertised_url(tmp_path: Path) -> None:
    config = parse_config(
        {
            "servers": [{"name": "a", "model": "/m/a", "port": 9001}],
            "engine": {"host": "0.0.0.0", "advertise_host": "10.0.0.2"},
            "supervisor": {"state_dir": str(tmp_path)},
        }
    )
    key = engine_api_key(config)
    assert key and len(key) >= 32
    assert engine_api_key(config) == key  # kept: adopted engines keep working after a restart
    assert stat.S_IMODE((tmp_path / "engine_api_key").stat().st_mode) == 0o600
    spec = build_specs(config, key)["a"][0]
    assert _flag(spec.argv(), "--host") == "0.0.0.0"
    assert f"--api-key={key}" in spec.argv()  # one token: argparse takes "-..." for a flag
    assert spec.url == "http://10.0.0.2:9001"
    assert spec.config_hash != build_specs(config, "other")["a"][0].config_hash


def test_loopback_engines_have_no_key_unless_configured(tmp_path: Path) -> None:
    base = {"servers": [{"name": "a", "model": "/m/a"}], "supervisor": {"state_dir": str(tmp_path)}}
    assert engine_api_key(parse_config(base)) is None
    assert engine_api_key(parse_config({**base, "engine": {"api_key": "k"}})) == "k"
    dashed = parse_config({**base, "engine": {"api_key": "-k-"}})
    assert "--api-key=-k-" in build_specs(dashed, engine_api_key(dashed))["a"][0].argv()
    assert not (tmp_path / "engine_api_key").exists()


def test_supervisor_names_must_be_unique() -> None:
    twice = [{"name": "a", "url": "http://10.0.0.1:8100"}, {"name": "a", "url": "http://x:1"}]
    with pytest.raises(ConfigError, match=r"supervisors\[1\]\.name: 'a' is already used"):
        parse_config({"supervisors": twice})
    config = parse_config({"supervisor": {"admin_token": "t"}})
    (local,) = config.supervisor_endpoints
    assert (local.name, local.url, local.admin_token) == ("local", "http://127.0.0.1:8100", "t")
