"""Sleep mode: started with --enable-sleep-mode, evicted by POST /sleep?level=1, woken by
POST /wake_up, checked with /is_sleeping."""

from __future__ import annotations

from pathlib import Path

import httpx

from orchestra.supervisor.states import EngineState

from .helpers import make_config, run, running, server, until


def test_sleep_wake_and_eviction_by_sleep(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        [
            server(
                "sleepy", tmp_path, "--sleep-delay", "0.05", "--wake-delay", "0.05", sleep_mode=True
            )
        ],
        pool=[server("other", tmp_path)],
        supervisor={"max_resident": 1},
    )

    async def scenario() -> None:
        async with running(config) as (client, manager):
            sleepy = manager.models["sleepy"].engines[0]
            await until(lambda: sleepy.state is EngineState.READY, what="sleepy ready")
            pid = sleepy.pid
            async with httpx.AsyncClient(timeout=5) as direct:
                r = await client.post("/models/sleepy/sleep")
                assert r.status_code == 200 and r.json()["state"] == "sleeping"
                assert (await direct.get(sleepy.url + "/is_sleeping")).json()["is_sleeping"]
                r = await client.post("/models/sleepy/wake")
                assert r.json()["state"] == "ready" and r.json()["upstreams"] == [sleepy.url]
                assert not (await direct.get(sleepy.url + "/is_sleeping")).json()["is_sleeping"]
                # Another model needs the one slot: sleepy is put to sleep, not stopped.
                r = await client.post("/models/other/ensure")
                assert r.status_code == 200
                assert sleepy.state is EngineState.SLEEPING and sleepy.pid == pid
                # Asking for sleepy again wakes the same process (and stops `other`).
                r = await client.post("/models/sleepy/ensure")
                assert r.json()["state"] == "ready" and sleepy.pid == pid
                assert manager.models["other"].state is EngineState.COLD
            argv = sleepy.spec.argv()
            assert "--enable-sleep-mode" in argv
            assert sleepy.spec.env(None)["VLLM_SERVER_DEV_MODE"] == "1"
            r = await client.post("/models/other/sleep")
            assert r.status_code == 400  # sleep_mode is off for it

    run(scenario())
