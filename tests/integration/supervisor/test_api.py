"""Control API surface: admin token, model table shape, logs, demand, metrics names."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.config import ConfigError
from orchestra.supervisor.states import EngineState
from tests.conftest import parse_metrics
from tests.fake_engine import free_port

from .helpers import make_config, run, running, server, until


def test_admin_token_required_when_set(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, [], pool=[server("m", tmp_path)], supervisor={"admin_token": "s3"}
    )

    async def scenario() -> None:
        async with running(config) as (client, _):
            assert (await client.get("/health")).json() == {"status": "ok"}
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                r = await client.get("/models", headers=headers)
                assert r.status_code == 401
                assert r.json()["error"]["code"] == "invalid_admin_token"
            r = await client.get("/models", headers={"Authorization": "Bearer s3"})
            assert r.status_code == 200

    run(scenario())


def test_token_is_mandatory_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="admin_token is required"):
        make_config(tmp_path, [], supervisor={"host": "0.0.0.0"})


def test_model_table_logs_demand_and_metrics(tmp_path: Path) -> None:
    config = make_config(tmp_path, [server("m", tmp_path)], pool=[server("c", tmp_path)])

    async def scenario() -> None:
        async with running(config) as (client, manager):
            await until(lambda: manager.models["m"].state is EngineState.READY, what="ready")
            table = (await client.get("/models")).json()["models"]
            m = table[0]
            assert set(m) >= {
                "name",
                "managed",
                "hot",
                "state",
                "upstreams",
                "engines",
                "page_cache",
                "last_used_s_ago",
            }
            assert m["managed"] and m["hot"] and m["state"] == "ready"
            assert set(m["engines"][0]) >= {
                "id",
                "state",
                "pid",
                "port",
                "url",
                "gpus",
                "uptime_s",
                "restarts",
                "last_error",
            }
            assert set(m["page_cache"]) == {"bytes_total", "bytes_resident", "fraction"}
            assert m["page_cache"]["bytes_total"] == 4096
            assert table[1]["state"] == "cold" and not table[1]["hot"]
            logs = (await client.get("/models/m/logs", params={"lines": 5})).json()
            assert logs["name"] == "m" and any("listening" in line for line in logs["lines"])
            url = table[0]["upstreams"][0]
            report = {"demand": {"c": 4}, "inflight": {url: 2}, "draining_seen": []}
            r = await client.post("/gateways/gw-1/sync", json=report)
            assert r.status_code == 200 and manager.demand.count("c") == 4
            assert [m["name"] for m in r.json()["models"]] == ["m", "c"]
            assert manager.reports.inflight([url]) == 2 and set(manager.reports.live()) == {"gw-1"}
            r = await client.post("/gateways/gw-1/sync", json={"demand": {"c": "many"}})
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
            text = (await client.get("/metrics")).text
            metrics = parse_metrics(text)
            ready = frozenset({("model", "m"), ("state", "ready")})
            assert metrics["orchestra_supervisor_engine_state", ready] == 1
            assert (
                metrics[
                    "orchestra_supervisor_engine_state",
                    ready - {("state", "ready")} | {("state", "cold")},
                ]
                == 0
            )
            for name in (
                "orchestra_supervisor_restarts_total",
                "orchestra_supervisor_page_cache_resident_bytes",
                "orchestra_supervisor_page_cache_fraction",
                "orchestra_supervisor_swap_seconds_count",
                "orchestra_supervisor_swaps_total",
            ):
                assert name in text, name
            gpus = (await client.get("/gpus")).json()
            assert gpus == {"gpus": []}

    run(scenario())


def test_replicas_restart_and_unload(tmp_path: Path) -> None:
    two = server("duo", tmp_path, replicas=[{"port": free_port()}, {"port": free_port()}])
    del two["port"]
    config = make_config(tmp_path, [], pool=[two])

    async def scenario() -> None:
        async with running(config) as (client, manager):
            r = await client.post("/models/duo/ensure")
            assert r.status_code == 200
            await until(lambda: len(manager.models["duo"].ready()) == 2, what="both replicas")
            info = (await client.get("/models/duo")).json()
            assert len(info["upstreams"]) == 2 and [e["id"] for e in info["engines"]] == [
                "duo",
                "duo#1",
            ]
            pids = [e["pid"] for e in info["engines"]]
            r = await client.post("/models/duo/restart")
            assert r.status_code == 200
            after = r.json()["engines"]
            assert [e["state"] for e in after] == ["ready", "ready"]
            assert [e["restarts"] for e in after] == [1, 1]
            assert {e["pid"] for e in after}.isdisjoint(pids)
            r = await client.post("/models/duo/unload")
            assert r.json()["state"] == "cold" and r.json()["upstreams"] == []
            logs = (await client.get("/models/duo/logs", params={"replica": 1})).json()
            assert logs["lines"] and (tmp_path / "logs" / "duo.1.log").exists()

    run(scenario())
