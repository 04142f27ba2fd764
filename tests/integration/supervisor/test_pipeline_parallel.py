"""A model bigger than a node (vLLM pipeline parallel on Ray): the supervisor launches the head
with --pipeline-parallel-size / --distributed-executor-backend ray and RAY_ADDRESS, and judges its
readiness by /health like any engine. (The fake engine stands in for `vllm serve`; the real
two-node GPU run is documented in docs/multi-node.md, not faked here.)"""

from __future__ import annotations

from pathlib import Path

import psutil

from .helpers import make_config, run, running, server


def test_pipeline_parallel_head_is_launched_with_ray_and_becomes_ready(tmp_path: Path) -> None:
    big = server(
        "big",
        tmp_path,
        pipeline_parallel_size=2,
        distributed_executor_backend="ray",
        ray_address="10.231.0.1:6379",
    )
    config = make_config(tmp_path, [big])

    async def scenario() -> tuple[list[str], dict[str, str], str]:
        async with running(config) as (client, manager):
            reply = await client.post("/models/big/ensure", params={"timeout_s": 20})
            assert reply.status_code == 200, reply.text
            pid = manager.models["big"].engines[0].pid
            assert pid is not None
            proc = psutil.Process(pid)
            return proc.cmdline(), proc.environ(), reply.json()["state"]

    argv, env, state = run(scenario())
    assert state == "ready"
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    assert env["RAY_ADDRESS"] == "10.231.0.1:6379"
