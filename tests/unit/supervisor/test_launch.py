"""Argument lists and environments for `vllm serve` and the api_server module form."""

from __future__ import annotations

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
