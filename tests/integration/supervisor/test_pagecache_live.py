"""Page-cache residency of a cold model's weights (a real 256 MB file), before and after the
supervisor preloads it, as the control API and /metrics report it; and the RAM budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestra.supervisor.pagecache import evict_file
from tests.conftest import parse_metrics

from .helpers import make_config, run, running, server, until

SIZE = 256 << 20


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    block = os.urandom(1 << 20)
    with (folder / "model-00001-of-00001.safetensors").open("wb") as f:
        for _ in range(SIZE >> 20):
            f.write(block)
    (folder / "config.json").write_text("{}")
    return folder


@pytest.mark.slow
def test_residency_reported_and_rising_after_preload(tmp_path: Path, weights: Path) -> None:
    for f in weights.glob("*.safetensors"):
        evict_file(f)
    config = make_config(tmp_path, [], pool=[server("big", tmp_path, model=str(weights))])

    async def scenario() -> None:
        async with running(config) as (client, manager):
            await manager.preloader.measure()
            before = (await client.get("/models/big")).json()["page_cache"]
            assert before["bytes_total"] == SIZE and before["fraction"] < 0.2, before
            assert manager.cold_models() == ["big"]
            assert await manager.preloader.preload(manager.cold_models()) == ["big"]
            after = (await client.get("/models/big")).json()["page_cache"]
            assert after["fraction"] > 0.95 and after["bytes_resident"] > before["bytes_resident"]
            metrics = parse_metrics((await client.get("/metrics")).text)
            key = frozenset({("model", "big")})
            assert metrics["orchestra_supervisor_page_cache_resident_bytes", key] > 0.95 * SIZE
            assert metrics["orchestra_supervisor_page_cache_fraction", key] > 0.95

    run(scenario())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["read", "mmap"])
def test_background_preload_within_budget(tmp_path: Path, weights: Path, method: str) -> None:
    for f in weights.glob("*.safetensors"):
        evict_file(f)
    small = tmp_path / "small.gguf"
    small.write_bytes(os.urandom(4 << 20))
    evict_file(small)
    config = make_config(
        tmp_path,
        [],
        pool=[
            server("big", tmp_path, model=str(weights)),
            server("small", tmp_path, model=str(small)),
        ],
        preload={"enabled": True, "ram_budget_gb": 0.1, "method": method, "interval_s": 0.2},
    )

    async def scenario() -> None:
        async with running(config) as (client, manager):

            async def small_cached() -> bool:
                info = (await client.get("/models/small")).json()
                return bool(info["page_cache"]["fraction"] > 0.95)

            await until(small_cached, 20, "small model preloaded")
            assert "big" not in manager.preloader.preloaded  # 256 MB > the 0.1 GiB budget
            assert manager.preloader.plan(["big", "small"]) == ["small"]

    run(scenario())
