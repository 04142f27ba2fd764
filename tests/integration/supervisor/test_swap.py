"""On-demand swap with one resident slot (a CPU host): joined ensures, failures, timeouts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from orchestra.supervisor.states import EngineState
from tests.conftest import parse_metrics

from .helpers import make_config, run, running, server, until


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_twenty_concurrent_ensures_join_one_swap_and_are_all_served(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        [server("hot", tmp_path)],
        pool=[server("cold", tmp_path, "--startup-delay", "1")],
        supervisor={"max_resident": 1},
    )

    async def scenario() -> None:
        async with running(config) as (client, manager):
            await until(lambda: manager.models["hot"].state is EngineState.READY, what="hot")
            replies = await asyncio.gather(
                *(client.post("/models/cold/ensure", params={"timeout_s": 20}) for _ in range(20))
            )
            assert [r.status_code for r in replies] == [200] * 20
            upstreams = {tuple(r.json()["upstreams"]) for r in replies}
            assert len(upstreams) == 1
            (url,) = next(iter(upstreams))
            async with httpx.AsyncClient(timeout=10) as engine:
                served = await asyncio.gather(
                    *(
                        engine.post(url + "/v1/chat/completions", json=_chat("cold"))
                        for _ in range(20)
                    )
                )
            assert [r.status_code for r in served] == [200] * 20
            table = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
            assert table["hot"]["state"] == "cold" and not table["hot"]["hot"]  # evicted
            assert table["cold"]["hot"] and table["cold"]["engines"][0]["restarts"] == 0
            metrics = parse_metrics((await client.get("/metrics")).text)
            assert metrics["orchestra_supervisor_swaps_total", frozenset({("model", "cold")})] == 1
            evicted = frozenset({("model", "hot"), ("how", "stop")})
            assert metrics["orchestra_supervisor_evictions_total", evicted] == 1
            log = tmp_path / "logs" / "cold.log"
            assert log.read_text().count("--- orchestra: starting cold") == 1  # one process

    run(scenario())


def test_a_failed_swap_reports_why_to_every_waiter(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, [], pool=[server("broken", tmp_path, "--fail-start", "--startup-delay", "0.3")]
    )

    async def scenario() -> None:
        async with running(config) as (client, _):
            replies = await asyncio.gather(
                *(client.post("/models/broken/ensure", params={"timeout_s": 20}) for _ in range(5))
            )
            assert {r.status_code for r in replies} == {503}
            messages = {r.json()["error"]["message"] for r in replies}
            assert len(messages) == 1  # one swap, one reason
            assert "Engine core initialization failed" in messages.pop()

    run(scenario())


def test_ensure_timeout_is_504_and_the_swap_goes_on(tmp_path: Path) -> None:
    config = make_config(tmp_path, [], pool=[server("late", tmp_path, "--startup-delay", "1.5")])

    async def scenario() -> None:
        async with running(config) as (client, manager):
            r = await client.post("/models/late/ensure", params={"timeout_s": 0.3})
            assert r.status_code == 504 and r.json()["error"]["code"] == "ensure_timeout"
            await until(lambda: manager.models["late"].state is EngineState.READY, 20, "ready")

    run(scenario())


def test_unknown_model_is_404(tmp_path: Path) -> None:
    config = make_config(tmp_path, [])

    async def scenario() -> None:
        async with running(config) as (client, _):
            for r in (
                await client.post("/models/nope/ensure"),
                await client.get("/models/nope"),
                await client.get("/models/nope/logs"),
            ):
                assert r.status_code == 404
                assert r.json()["error"]["code"] == "model_not_found"
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}

    run(scenario())
