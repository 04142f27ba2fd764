"""The supervisor runs the Whisper engine as a model's own `engine:` beside a vLLM-like model
(the fake engine under the global `engine:`), with the same lifecycle: launched from its own
argument list (supervisor/launch.py `own_engine_argv`: the model, --served-model-name, --host,
--port, then extra_args — none of vLLM's flags), READY once its health path answers 200,
swapped in on demand into the one resident slot (evicting the other model), reported with its
`kind`, and stopped by SIGTERM to its process group."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

from orchestra.config import parse_config
from tests.integration.engines.whisper_process import NAME, SENTENCES, wer
from tests.integration.supervisor.helpers import (
    config_dict,
    group_members,
    run,
    running,
    wait_groups_empty,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_supervisor_runs_the_engine_beside_vllm(
    tmp_path: Path, model: Path, speech: dict[str, Path]
) -> None:
    whisper = {
        "name": NAME,
        "model": str(model),
        "extra_args": ["--threads", "1"],
        "engine": {
            "kind": "whisper",
            "command": [sys.executable, "-m", "orchestra.engines.whisper"],
            "model_arg": "--model",
            "startup_timeout_s": 180,
        },
    }
    config = parse_config(
        config_dict(
            tmp_path,
            [{"name": "llm", "model": "fake-llm"}],
            pool=[whisper],
            supervisor={"max_resident": 1},
        )
    )
    pgids: list[int] = []

    async def scenario() -> None:
        async with running(config) as (client, manager):
            table = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
            assert (table["llm"]["kind"], table[NAME]["kind"]) == ("vllm", "whisper")
            r = await client.post(f"/models/{NAME}/ensure", params={"timeout_s": 180})
            assert r.status_code == 200, r.text
            [url] = r.json()["upstreams"]
            engine = manager.models[NAME].engines[0]
            assert "--tensor-parallel-size" not in engine.spec.argv()  # none of vLLM's flags
            assert engine.pid is not None and group_members(engine.pid)
            pgids.append(engine.pid)
            llm = (await client.get("/models/llm")).json()
            assert llm["upstreams"] == []  # evicted for the one resident slot
            async with openai.AsyncOpenAI(
                base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120
            ) as sdk:
                reply = await sdk.audio.transcriptions.create(model=NAME, file=speech["weather"])
            assert wer(SENTENCES["weather"], reply.text) <= 0.25, reply.text
            back = await client.post("/models/llm/ensure", params={"timeout_s": 60})
            assert back.status_code == 200, back.text  # and the LLM swaps back in
            assert (await client.get(f"/models/{NAME}")).json()["upstreams"] == []

    run(scenario(), timeout=240)
    assert wait_groups_empty(pgids, timeout=20) == []
