"""The supervisor launches the Whisper engine as it launches vLLM: its own argument list
(supervisor/launch.py: the model after --model, --served-model-name, --host, --port,
--tensor-parallel-size, --dtype, then extra_args), READY once /health answers 200, stopped by
SIGTERM to the process group when the supervisor stops."""

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


def test_the_supervisor_runs_the_engine(
    tmp_path: Path, model: Path, speech: dict[str, Path]
) -> None:
    server = {"name": NAME, "model": str(model), "extra_args": ["--threads", "1"]}
    config = parse_config(
        config_dict(
            tmp_path,
            [],
            pool=[server],
            engine={
                "command": [sys.executable, "-m", "orchestra.engines.whisper"],
                "startup_timeout_s": 180,
                "stop_timeout_s": 15,
            },
        )
    )
    pgids: list[int] = []

    async def scenario() -> None:
        async with running(config) as (client, manager):
            r = await client.post(f"/models/{NAME}/ensure", params={"timeout_s": 180})
            assert r.status_code == 200, r.text
            [url] = r.json()["upstreams"]
            engine = manager.models[NAME].engines[0]
            assert engine.pid is not None and group_members(engine.pid)
            pgids.append(engine.pid)
            async with openai.AsyncOpenAI(
                base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120
            ) as sdk:
                reply = await sdk.audio.transcriptions.create(model=NAME, file=speech["weather"])
            assert wer(SENTENCES["weather"], reply.text) <= 0.25, reply.text

    run(scenario(), timeout=240)
    assert wait_groups_empty(pgids, timeout=20) == []
