"""The usage ledger on a real SQLite (the default) and a real PostgreSQL (Debian's, started by
the test), with the OpenAI SDK against a fake engine: per key x model counts and cost, kept
across a restart (SQLite) and added up by two workers (PostgreSQL); read through
`GET /admin/usage`, `orchestra usage` and `orchestra_key_tokens_total`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until
from tests.fake_engine import FakeEngineProcess
from tests.integration.usage.helpers import (
    ADMIN,
    cli,
    expected_after_some_calls,
    gateway,
    matches,
    some_calls,
    totals,
)
from tests.postgres import postgres_url

pytestmark = pytest.mark.timeout(240)


def test_sqlite_ledger_counts_per_key_and_model_and_survives_a_restart(
    engine: FakeEngineProcess, tmp_path: Path
) -> None:
    usage = {"dir": str(tmp_path)}
    with gateway(engine, usage) as gw:
        some_calls(gw)
        got = totals(gw)
        assert matches(got, expected_after_some_calls(1)), got
        metrics = gw.metrics()
        sample = ("orchestra_key_tokens_total", frozenset({("key", "team-a"), ("kind", "prompt")}))
        assert metrics[sample] == 8
        assert httpx.get(gw.url + "/admin/usage", timeout=30).status_code == 401
        console = httpx.get(gw.url + "/console/api/usage", auth=("any", ADMIN), timeout=30)
        assert {(t["key"], t["model"]) for t in console.json()} == set(got)
    assert (tmp_path / "usage.sqlite3").exists()
    with gateway(engine, usage) as gw:  # a restart: the counts go on from the database
        some_calls(gw)
        assert matches(totals(gw), expected_after_some_calls(2))
        out = cli(gw.url, "usage", "--key", "team-a", "--since", "1d", "-o", "json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert [(t["key"], t["model"], t["requests"]) for t in report["totals"]] == [
            ("team-a", "m", 6)
        ]
        table = cli(gw.url, "usage", columns=200)
        assert table.returncode == 0 and "team-b" in table.stdout, table.stderr


def test_postgres_ledger_adds_up_two_workers() -> None:
    with postgres_url() as url, FakeEngineProcess("--served-model-name", "m", name="m") as engine:
        with gateway(engine, {"database_url": url}, workers=2) as gw:
            gw.wait_workers(2)
            for _ in range(3):  # new connections: spread over both workers
                some_calls(gw)
            want = expected_after_some_calls(3)
            # each worker writes its own counts (every 0.2 s): their sum is exact
            wait_until(lambda: matches(totals(gw), want), timeout=30, interval=0.3)
        with gateway(engine, {"database_url": url}) as gw:  # a restart on the same database
            some_calls(gw)
            assert matches(totals(gw), expected_after_some_calls(4))
