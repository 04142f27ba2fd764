"""The user's seed file, unchanged apart from launching the fake engine on free ports, planned
onto 7 configured GPUs: the hot set lands on GPUs 0-6 as pinned; the 70B (tp 6) evicts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import psutil
import yaml

from orchestra.config import parse_config
from orchestra.supervisor.states import EngineState
from tests.conftest import SEED_CONFIG
from tests.fake_engine import free_port

from .helpers import FAKE_ENGINE, run, running, until


def _engine_env(pid: int) -> dict[str, str]:
    return dict(psutil.Process(pid).environ())


def test_seed_fixture_planned_onto_seven_gpus(tmp_path: Path) -> None:
    data = yaml.safe_load(SEED_CONFIG.read_text())
    for section in ("servers", "rotation_pool"):
        for s in data[section]:
            s["port"] = free_port()
    data["engine"] = {
        "command": [sys.executable, str(FAKE_ENGINE)],
        "model_arg": "--model",
        "log_dir": str(tmp_path / "logs"),
        "health_poll_interval_s": 0.02,
        "stop_timeout_s": 3,
    }
    data["supervisor"] = {"gpus": list(range(7)), "state_dir": str(tmp_path / "run")}
    data["rotation"] = {"enabled": False}
    data["preload"] = {"enabled": False}
    config = parse_config(data)

    async def scenario() -> None:
        async with running(config) as (client, manager):
            hot = ["deepseek-coder-33b", "codellama-34b", "mistral-7b"]
            await until(
                lambda: all(manager.models[n].state is EngineState.READY for n in hot), 30, "hot"
            )
            table = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
            assert table["deepseek-coder-33b"]["engines"][0]["gpus"] == [0, 1, 2]
            assert table["codellama-34b"]["engines"][0]["gpus"] == [3, 4, 5]
            assert table["mistral-7b"]["engines"][0]["gpus"] == [6]
            for name, visible in (("deepseek-coder-33b", "0,1,2"), ("mistral-7b", "6")):
                env = _engine_env(table[name]["engines"][0]["pid"])
                assert env["CUDA_VISIBLE_DEVICES"] == visible
            assert [m for m, v in table.items() if v["hot"]] == hot
            gpus = (await client.get("/gpus")).json()["gpus"]
            assert [g["engine"] for g in gpus] == [hot[0]] * 3 + [hot[1]] * 3 + [hot[2]]
            # Requests in flight on mistral: the 70B must take deepseek's and codellama's GPUs.
            mistral = table["mistral-7b"]["upstreams"][0]
            gateway = asyncio.create_task(_gateway_serving(client, {mistral: 3}))
            r = await client.post("/models/llama-3.1-70b/ensure", params={"timeout_s": 30})
            assert r.status_code == 200, r.text
            llama = r.json()["engines"][0]
            assert llama["gpus"] == [0, 1, 2, 3, 4, 5]
            assert _engine_env(llama["pid"])["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5"
            assert manager.models["mistral-7b"].state is EngineState.READY
            for victim in ("deepseek-coder-33b", "codellama-34b"):
                assert manager.models[victim].state is EngineState.COLD
            # phi-3-mini (tp 1): no free GPU; mistral serves requests, so idle llama makes room.
            r = await client.post("/models/phi-3-mini/ensure")
            assert r.status_code == 200
            assert r.json()["engines"][0]["gpus"] == [0]
            gateway.cancel()
            assert manager.models["llama-3.1-70b"].state is EngineState.COLD

    run(scenario(), timeout=90)


async def _gateway_serving(client: httpx.AsyncClient, inflight: dict[str, int]) -> None:
    """A gateway's sync loop: requests stay in flight on `inflight`'s engines; draining
    engines are taken out of rotation at once (none of its requests are on them)."""
    draining: list[str] = []
    while True:
        report = {"inflight": inflight, "draining_seen": draining}
        reply = await client.post("/gateways/gw/sync", json=report)
        draining = [url for m in reply.json()["models"] for url in m["draining"]]
        await asyncio.sleep(0.05)
