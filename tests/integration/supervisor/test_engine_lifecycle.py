"""Engine state machine against real fake-engine subprocesses: slow start, failed start with the
log tail, crash -> backoff -> restart -> FAILED, and a stop that needs SIGKILL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from orchestra.supervisor.engine import Engine
from orchestra.supervisor.states import EngineState

from .helpers import group_members, make_config, run, running, server, until


def test_slow_start_is_starting_until_health_answers(tmp_path: Path) -> None:
    config = make_config(tmp_path, [], pool=[server("slow", tmp_path, "--startup-delay", "1.5")])

    async def scenario() -> None:
        async with running(config) as (client, manager):
            engine = manager.models["slow"].engines[0]
            seen: list[EngineState] = []
            began = time.monotonic()
            reply = client.post("/models/slow/ensure", params={"timeout_s": 15})
            task = asyncio.ensure_future(reply)
            await until(lambda: engine.state is EngineState.STARTING, what="STARTING")
            seen.append(engine.state)
            await asyncio.sleep(1.0)
            seen.append(engine.state)  # still loading: not READY before /health answers
            r = await task
            assert r.status_code == 200, r.text
            assert time.monotonic() - began >= 1.5
            body = r.json()
            assert body["state"] == "ready" and body["upstreams"] == [engine.url]
            assert seen == [EngineState.STARTING, EngineState.STARTING]
            assert body["engines"][0]["pid"] == engine.pid and engine.pid is not None

    run(scenario())


def test_failed_start_reports_the_log_tail_then_fails(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, [], pool=[server("bad", tmp_path, "--fail-start")], engine={"max_restarts": 1}
    )

    async def scenario() -> None:
        async with running(config) as (client, manager):
            r = await client.post("/models/bad/ensure", params={"timeout_s": 15})
            assert r.status_code == 503
            err = r.json()["error"]
            assert err["code"] == "engine_failed"
            assert "exited with code 1 during startup" in err["message"]
            assert "Engine core initialization failed" in err["message"]  # the log tail
            engine = manager.models["bad"].engines[0]
            # BACKOFF retries once by itself, then gives up: FAILED.
            await until(lambda: engine.state is EngineState.FAILED, what="FAILED")
            assert engine.restarts == 1
            r = await client.post("/models/bad/ensure")
            assert r.status_code == 503 and "FAILED" in r.json()["error"]["message"]
            info = (await client.get("/models/bad")).json()
            assert info["state"] == "failed" and "Engine core" in info["engines"][0]["last_error"]

    run(scenario())


def test_crash_while_ready_backs_off_restarts_then_fails(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        [],
        pool=[server("crashy", tmp_path, "--exit-after", "0.8")],
        engine={"max_restarts": 2, "backoff_initial_s": 0.1},
    )

    async def scenario() -> None:
        async with running(config) as (client, manager):
            engine = manager.models["crashy"].engines[0]
            states: list[EngineState] = []
            manager.placer.notify = _recording(manager.placer.notify, engine, states)
            r = await client.post("/models/crashy/ensure")
            assert r.status_code == 200
            first_pid = engine.pid
            await until(lambda: engine.restarts >= 1 and engine.state is EngineState.READY, 20)
            assert engine.pid != first_pid
            info = (await client.get("/models/crashy")).json()
            assert "exited with code 3 while ready" in info["engines"][0]["last_error"]
            assert info["engines"][0]["restarts"] >= 1
            await until(lambda: engine.state is EngineState.FAILED, 30, "FAILED")
            assert engine.restarts == 2 and "exited with code 3" in (engine.last_error or "")
            assert EngineState.BACKOFF in states

    run(scenario(), timeout=60)


def _recording(
    notify: Callable[[], None], engine: Engine, states: list[EngineState]
) -> Callable[[], None]:
    def wrapped() -> None:
        if not states or states[-1] is not engine.state:
            states.append(engine.state)
        notify()

    return wrapped


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        [],
        pool=[server("stubborn", tmp_path, "--ignore-sigterm")],
        engine={"stop_timeout_s": 1.0},
    )

    async def scenario() -> None:
        async with running(config) as (client, manager):
            assert (await client.post("/models/stubborn/ensure")).status_code == 200
            pgid = manager.models["stubborn"].engines[0].pid
            assert pgid is not None and len(group_members(pgid)) == 1  # the engine leads its group
            began = time.monotonic()
            r = await client.post("/models/stubborn/unload")
            took = time.monotonic() - began
            assert r.status_code == 200 and r.json()["state"] == "cold"
            assert 1.0 <= took < 2.5, took
            assert group_members(pgid) == []
            log = (await client.get("/models/stubborn/logs", params={"lines": 50})).json()
            assert any("ignoring SIGTERM" in line for line in log["lines"])

    run(scenario())
