"""Argument lists and environments for `vllm serve` and the api_server module form."""

from __future__ import annotations

import json

import pytest

from orchestra.config import load_config, parse_config
from orchestra.supervisor.launch import build_specs
from tests.conftest import SEED_CONFIG

SEED = SEED_CONFIG


def test_seed_specs_keep_ports_and_pins() -> None:
    specs = build_specs(load_config(SEED))
    assert [s[0].port for s in specs.values()] == [8001, 8002, 8003, 8004, 8005, 8006]
    assert specs["deepseek-coder-33b"][0].pinned_gpus == (0, 1, 2)
    assert specs["llama-3.1-70b"][0].pinned_gpus is None
    argv = specs["mistral-7b"][0].argv()
    assert argv[:3] == ["vllm", "serve", "/mnt/nvme/models/mistral-7b"]
    for flag, value in [
        ("--served-model-name", "mistral-7b"),
        ("--port", "8003"),
        ("--host", "127.0.0.1"),
        ("--tensor-parallel-size", "1"),
        ("--max-model-len", "8192"),
        ("--dtype", "float16"),
    ]:
        assert argv[argv.index(flag) + 1] == value
    assert specs["mistral-7b"][0].env([6])["CUDA_VISIBLE_DEVICES"] == "6"


def test_module_command_sleep_mode_replicas_and_auto_ports() -> None:
    config = parse_config(
        {
            "engine": {
                "command": ["python", "-m", "vllm.entrypoints.openai.api_server"],
                "model_arg": "--model",
                "first_port": 9000,
                "extra_args": ["--enforce-eager"],
            },
            "servers": [
                {"name": "a", "model": "/m/a", "port": 9001, "sleep_mode": True},
                {
                    "name": "b",
                    "model": "/m/b",
                    "replicas": [{}, {"gpu_ids": [3]}],
                    "extra_args": ["--x"],
                    "env": {"K": "v"},
                },
            ],
        }
    )
    specs = build_specs(config)
    a = specs["a"][0]
    assert a.argv()[:5] == ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m/a"]
    assert "--enable-sleep-mode" in a.argv() and a.env(None)["VLLM_SERVER_DEV_MODE"] == "1"
    b0, b1 = specs["b"]
    assert (b0.port, b1.port) == (9000, 9002)  # 9001 is taken by a
    assert (b0.id, b1.id) == ("b", "b#1") and b1.pinned_gpus == (3,)
    assert b0.argv()[-2:] == ["--enforce-eager", "--x"] and b0.env(None)["K"] == "v"
    assert b1.log_path.name == "b.1.log" and b0.log_path.name == "b.log"


def test_kv_aware_engines_publish_events_on_ports_after_the_http_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)  # the engines inherit the supervisor's

    config = parse_config(
        {
            "engine": {"command": ["vllm", "serve"], "first_port": 9000},
            "servers": [
                {"name": "kv", "model": "/m/kv", "balancing": "kv_aware", "replicas": [{}, {}]},
                {"name": "plain", "model": "/m/plain"},
                {"name": "off", "model": "/m/off", "balancing": "kv_aware", "kv_events": False},
                {
                    "name": "seeded",
                    "model": "/m/s",
                    "port": 9006,  # named: skipped by the assigned ports
                    "balancing": "kv_aware",
                    "env": {"PYTHONHASHSEED": "7"},
                },
            ],
        }
    )
    specs = build_specs(config)
    assert [s.port for s in specs["kv"]] == [9000, 9001]  # HTTP ports as without events
    assert [specs[n][0].port for n in ("plain", "off", "seeded")] == [9002, 9003, 9006]
    first = specs["kv"][0]
    argv = first.argv()
    assert "--enable-prefix-caching" in argv
    kv_config = json.loads(argv[argv.index("--kv-events-config") + 1])
    assert kv_config == {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": "tcp://*:9004",
        "replay_endpoint": "tcp://*:9005",
    }
    assert first.kv_events is not None
    assert first.kv_events.publisher == "tcp://127.0.0.1:9004"
    assert first.kv_events.replay == "tcp://127.0.0.1:9005"
    assert first.kv_events.hash_seed == "vllm-none-hash" and first.kv_events.hash_algo == "sha256"
    second = specs["kv"][1].kv_events
    assert second is not None and second.publisher == "tcp://127.0.0.1:9007"  # 9006 is taken
    for name in ("plain", "off"):
        assert specs[name][0].kv_events is None
        assert "--kv-events-config" not in specs[name][0].argv()
    seeded = specs["seeded"][0].kv_events
    assert seeded is not None and seeded.hash_seed == "7"  # NONE_HASH's seed follows the env


def test_tracing_on_gives_vllm_engines_the_otlp_endpoint_over_http() -> None:
    servers = [
        {"name": "v", "model": "/m/v"},
        {"name": "own", "model": "/m/o", "engine": {"command": ["srv"]}},
    ]
    off = build_specs(parse_config({"servers": servers}))
    assert not any("--otlp-traces-endpoint" in s.argv() for s in off["v"] + off["own"])
    assert "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" not in dict(off["v"][0].base_env)

    on = build_specs(
        parse_config({"servers": servers, "tracing": {"endpoint": "http://collector:4318"}})
    )
    argv = on["v"][0].argv()
    at = argv.index("--otlp-traces-endpoint")
    assert argv[at + 1] == "http://collector:4318/v1/traces"  # vLLM posts to it as given
    env = dict(on["v"][0].base_env)
    assert env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"  # vLLM's default: gRPC
    assert env["OTEL_SERVICE_NAME"] == "vllm v"
    assert "--otlp-traces-endpoint" not in on["own"][0].argv()  # not vLLM: not its flag
    assert on["v"][0].config_hash != off["v"][0].config_hash  # an untraced engine is not adopted
