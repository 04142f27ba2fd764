"""The cost model and idle unload on a real supervisor with fake engines.

- A model with one sleeping replica (wake 0.2 s) and one cold one (start 3 s): an ensure returns
  once the woken replica serves, not after the cold start.
- A serving model whose queue (by Little's law from the reports) is longer than a measured wake:
  its sleeping replica is woken; with an idle queue nothing more is brought up.
- `idle_unload_s`: a model nobody asks for is evicted, its weights read back into the page cache;
  one in use stays.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from orchestra.protocol import GatewayReport
from orchestra.supervisor.costs import Way
from orchestra.supervisor.pagecache import evict_file
from orchestra.supervisor.states import EngineState
from tests.fake_engine import free_port

from .helpers import make_config, run, running, server, until

S = EngineState


def _duo(tmp: Path, start_s: str) -> dict[str, object]:
    return server(
        "duo",
        tmp,
        "--startup-delay",
        start_s,
        "--sleep-delay",
        "0.05",
        "--wake-delay",
        "0.2",
        sleep_mode=True,
        replicas=[{"port": free_port()}, {"port": free_port()}],
    )


def test_an_ensure_wakes_the_sleeping_replica_without_waiting_for_the_cold_one(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, [_duo(tmp_path, "3")])

    async def scenario() -> None:
        async with running(config) as (client, manager):
            duo = manager.models["duo"]
            await until(lambda: len(duo.ready()) == 2, 30, "both replicas")
            assert (await client.post("/models/duo/sleep")).status_code == 200
            await duo.engines[1].stop()  # one sleeping, one cold
            assert [e.state for e in duo.engines] == [S.SLEEPING, S.COLD]
            entry = (await client.get("/models/duo")).json()
            # No wake measured yet: the wake counts as the measured (3 s) start, and wins.
            assert entry["expected_s"] is not None and entry["expected_s"] > 2.0
            began = time.monotonic()
            r = await client.post("/models/duo/ensure")
            took = time.monotonic() - began
            assert r.status_code == 200 and r.json()["upstreams"] == [duo.engines[0].url]
            assert took < 2.0, took  # the 3 s start is still under way
            assert duo.engines[1].state is S.STARTING
            await until(lambda: len(duo.ready()) == 2, 30, "the cold replica too")

    run(scenario())


def test_a_long_queue_wakes_a_sleeping_replica_an_idle_one_does_not(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_duo(tmp_path, "0.3")])

    async def scenario() -> None:
        async with running(config) as (client, manager):
            duo = manager.models["duo"]
            first, second = duo.engines
            await until(lambda: len(duo.ready()) == 2, 30, "both replicas")
            await client.post("/models/duo/sleep")
            await client.post("/models/duo/wake")  # measures a wake
            await second.sleep()
            assert manager.scaler.costs.wake_s("duo") is not None
            # Idle: reports with nothing in flight keep the second replica asleep.
            for _ in range(5):
                manager.sync("g", GatewayReport(inflight={first.url: 0}, demand={"duo": 0}))
                await asyncio.sleep(0.05)
            assert second.state is S.SLEEPING
            best = manager.scaler.best(duo)
            assert best is not None and best.way is Way.READY
            # 12 in flight, 4 new requests every 0.1 s: about 0.3 s a request, a 3.6 s queue
            # against a 0.2 s wake.
            for _ in range(6):
                manager.sync("g", GatewayReport(inflight={first.url: 12}, demand={"duo": 4}))
                await asyncio.sleep(0.1)
            await until(lambda: second.state is S.READY, 10, "the second replica woken")

    run(scenario())


def test_idle_unload_evicts_an_unused_model_and_keeps_its_page_cache_warm(tmp_path: Path) -> None:
    weights = tmp_path / "idle-weights"
    weights.mkdir()
    with (weights / "model.safetensors").open("wb") as f:
        f.write(os.urandom(4 << 20))
        f.flush()
        os.fsync(f.fileno())  # clean pages: evict_file can drop them (dirty ones stay cached)
    config = make_config(
        tmp_path,
        [
            server(
                "idle", tmp_path, "--startup-delay", "0.1", idle_unload_s=3.0, model=str(weights)
            ),
            server("busy", tmp_path, "--startup-delay", "0.1", idle_unload_s=3.0),
            server("kept", tmp_path, "--startup-delay", "0.1"),
        ],
        supervisor={"idle_check_interval_s": 0.1},
        preload={"enabled": False},  # the periodic pass is off; the idle unload preloads
    )

    async def scenario() -> None:
        async with running(config) as (_, manager):
            models = manager.models

            def asked(done: Callable[[], bool]) -> Callable[[], bool]:
                """A gateway's report on every poll: "busy" is asked for all along."""

                def check() -> bool:
                    out = [e.url for m in models.values() if m.draining for e in m.ready()]
                    manager.sync("g", GatewayReport(demand={"busy": 1}, draining_seen=out))
                    return done()

                return check

            await until(asked(lambda: bool(models["idle"].ready())), 20, "idle ready")
            evict_file(weights / "model.safetensors")  # as if memory pressure dropped it
            await until(asked(lambda: models["idle"].state is S.COLD), 20, "idle unloaded")
            await until(asked(lambda: "idle" in manager.preloader.preloaded), 10, "the preload")
            assert manager.preloader.residency["idle"].fraction > 0.99
            assert models["busy"].ready() and models["kept"].ready()

    run(scenario())
