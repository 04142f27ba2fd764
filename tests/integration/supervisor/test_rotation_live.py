"""Demand rotation with real engines: no swap at the threshold or below 2x, a swap after."""

from __future__ import annotations

from pathlib import Path

from orchestra.supervisor.states import EngineState

from .helpers import make_config, run, running, server, until


def test_rotation_swaps_after_threshold_and_not_before(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        [server("a", tmp_path)],
        pool=[server("b", tmp_path)],
        supervisor={"max_resident": 1},
        rotation={"enabled": True, "threshold": 5, "interval_s": 3600, "min_residency_s": 0},
    )

    async def scenario() -> None:
        async with running(config) as (client, manager):
            await until(lambda: manager.models["a"].state is EngineState.READY, what="a ready")

            async def report(counts: dict[str, int]) -> None:
                r = await client.post("/gateways/gw/sync", json={"demand": counts})
                assert r.status_code == 200

            await report({"a": 3, "b": 5})
            assert await manager.rotator.tick() is None  # 5 does not exceed the threshold
            await report({"b": 1})
            assert await manager.rotator.tick() is None  # 6 is not more than 2 x 3
            await report({"a": 0, "b": 1})
            assert await manager.rotator.tick() == ("b", "a")  # 7 > 5 and 7 > 6
            assert manager.models["b"].state is EngineState.READY
            assert manager.models["a"].state is EngineState.COLD
            table = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
            assert table["b"]["hot"] and not table["a"]["hot"]
            # Hysteresis: a (3) cannot come straight back against b (7).
            await report({"a": 10})
            assert await manager.rotator.tick() is None  # 13 < 2 x 7

    run(scenario())
