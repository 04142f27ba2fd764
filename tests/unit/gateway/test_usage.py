"""The usage side's parts on their own: reading `usage` in both APIs' words, the ledger's
aggregation and its bound, the database's add-only upsert (a real SQLite file), budgets'
admission, settling and windows, and `since`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from orchestra.config import ApiKey, Budget, GatewayConfig, Price, UsageConfig
from orchestra.gateway.core.call import new_call
from orchestra.gateway.core.errors import BadRequest
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.protection.budgets import BudgetExceeded, Budgets, window_end, window_start
from orchestra.gateway.protection.keys import KeyRing
from orchestra.gateway.usage.accounts import build_usage
from orchestra.gateway.usage.ledger import Ledger
from orchestra.gateway.usage.query import parse_since
from orchestra.gateway.usage.store import UsageStore
from orchestra.gateway.usage.tokens import Tokens


def test_tokens_read_openais_and_anthropics_usage() -> None:
    openai = {
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    assert Tokens.of(openai) == Tokens(5, 7, 3)
    anthropic = {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 1}
    assert Tokens.of(anthropic) == Tokens(4, 2, 1)
    assert Tokens.of({"total_tokens": 3}) is None
    assert Tokens.of(None) is None
    assert Tokens.of({"prompt_tokens": True, "completion_tokens": -1}) is None


def _ledger(tmp_path: Path, **config: object) -> tuple[Ledger, UsageStore, GatewayMetrics]:
    usage = UsageConfig.model_validate({"dir": str(tmp_path), **config})
    store = UsageStore(usage)
    store.create()
    metrics = GatewayMetrics()
    prices = {"m": Price(input_per_1m=1.0, output_per_1m=2.0)}
    return Ledger(store, usage, prices, metrics), store, metrics


def test_the_ledger_adds_to_the_database_and_never_overwrites(tmp_path: Path) -> None:
    ledger, store, metrics = _ledger(tmp_path)
    assert ledger.tokens("a", "m", Tokens(10, 20, 4)) == pytest.approx(50 / 1e6)
    ledger.answer("a", "m", 200)
    ledger.answer("a", "m", 503)
    asyncio.run(ledger.flush())
    other, _, _ = _ledger(tmp_path)  # another worker on the same file
    other.tokens("a", "m", Tokens(1, 1, 0))
    other.answer("a", "m", 200)
    asyncio.run(other.flush())
    (row,) = store.rows(int(time.time()) - 3600)
    assert (row["requests"], row["errors"], row["prompt_tokens"]) == (3, 1, 11)
    assert (row["completion_tokens"], row["cached_tokens"]) == (21, 4)
    assert row["cost"] == pytest.approx(53 / 1e6)
    assert store.spent(window_start("day", time.time())) == {"a": (32, pytest.approx(53 / 1e6))}
    sample = metrics.registry.get_sample_value(
        "orchestra_key_tokens_total", {"key": "a", "kind": "cached"}
    )
    assert sample == 4
    store.close()


def test_a_flush_waits_for_the_one_in_flight(tmp_path: Path) -> None:
    """A reader's flush while the writer's is still in the database must not return before
    the writer's rows are there (the reader would read the ledger without them)."""
    ledger, store, _ = _ledger(tmp_path)
    slow_add = store.add

    def add(rows: object) -> None:
        time.sleep(0.3)  # the writer's transaction, slow on a busy machine
        slow_add(rows)  # type: ignore[arg-type]

    store.add = add  # type: ignore[method-assign]

    async def both() -> None:
        ledger.answer("a", "m", 200)
        writer = asyncio.create_task(ledger.flush())
        await asyncio.sleep(0.05)  # the writer has taken the rows and is in the database
        await ledger.flush()  # the reader's: nothing left of its own to add
        (row,) = store.rows(int(time.time()) - 3600)
        assert row["requests"] == 1
        await writer

    asyncio.run(both())
    store.close()


def test_the_rows_waiting_are_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    ledger, store, metrics = _ledger(tmp_path, max_pending_rows=2, max_key_labels=1)
    for key in ("a", "b", "c"):
        ledger.answer(key, "m", 200)
    ledger.answer("a", "m", 200)  # a row already waiting still counts
    ledger.tokens("a", "m", Tokens(1, 0, 0))  # the one key label
    ledger.tokens("c", "m", Tokens(1, 0, 0))  # past the labels: `_other`
    dropped = metrics.registry.get_sample_value("orchestra_usage_dropped_total")
    assert dropped == 2  # c's answer and its tokens
    other = metrics.registry.get_sample_value(
        "orchestra_key_tokens_total", {"key": "_other", "kind": "prompt"}
    )
    assert other == 1
    store.engine.dispose()
    (tmp_path / "usage.sqlite3").unlink()
    (tmp_path / "usage.sqlite3").mkdir()  # the database cannot be written: counts are kept
    asyncio.run(ledger.flush())
    (tmp_path / "usage.sqlite3").rmdir()
    store.create()
    asyncio.run(ledger.flush())
    assert {(r["key"], r["requests"]) for r in store.rows(0)} == {("a", 2), ("b", 1)}
    store.close()


def _budget(**limits: float) -> Budget:
    return Budget.model_validate(limits)


def test_a_budget_admits_below_its_limit_counting_reservations() -> None:
    budgets = Budgets()
    key = _budget(tokens_per_day=100)

    async def run() -> None:
        first = await budgets.admit("k", key, 60, 0.0)
        second = await budgets.admit("k", key, 60, 0.0)  # 60 reserved < 100: admitted
        with pytest.raises(BudgetExceeded) as refused:
            await budgets.admit("k", key, 1, 0.0)  # 120 reserved
        assert refused.value.status == 429 and refused.value.code == "budget_exceeded"
        reset = refused.value.headers["x-orchestra-budget-reset"]
        assert reset.endswith("T00:00:00Z")
        assert first is not None and second is not None
        budgets.settle(first, 10, 0.0)
        budgets.settle(second, 10, 0.0)  # spent 20: room again
        third = await budgets.admit("k", key, 60, 0.0)
        assert third is not None

    asyncio.run(run())


def test_cost_and_concurrency_limits() -> None:
    budgets = Budgets()

    async def run() -> None:
        key = _budget(max_concurrent=1, cost_per_month=1.0)
        held = await budgets.admit("k", key, 1, 0.5)
        with pytest.raises(BudgetExceeded, match="max_concurrent is 1"):
            await budgets.admit("k", key, 1, 0.1)
        assert held is not None
        budgets.settle(held, 1, 1.5)
        with pytest.raises(BudgetExceeded, match="cost_per_month is 1"):
            await budgets.admit("k", key, 1, 0.1)
        assert await budgets.admit("k", _budget(), 1, 0.0) is None  # no limit set
        assert await budgets.admit("k", None, 1, 0.0) is None

    asyncio.run(run())


def test_a_budget_starts_from_the_ledgers_spend() -> None:
    budgets = Budgets()
    budgets.seed({"day": {"k": (100, 0.0)}, "month": {"k": (100, 0.0)}})
    with pytest.raises(BudgetExceeded, match="used 100"):
        asyncio.run(budgets.admit("k", _budget(tokens_per_month=100), 1, 0.0))


def test_windows_are_utc_days_and_months() -> None:
    t = 1796000000.0  # 2026-11-30T...Z
    assert time.gmtime(window_start("day", t))[:6] == (2026, 11, 30, 0, 0, 0)
    assert time.gmtime(window_start("month", t))[:6] == (2026, 11, 1, 0, 0, 0)
    assert time.gmtime(window_end("month", t))[:6] == (2026, 12, 1, 0, 0, 0)
    december = 1797000000.0
    assert time.gmtime(window_end("month", december))[:3] == (2027, 1, 1)


def test_since() -> None:
    now = 1_800_000_000.0
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("30m", now) == now - 1800
    assert parse_since(None, now) == now - 7 * 86400
    assert parse_since("2026-12-01", now) == 1796083200
    with pytest.raises(BadRequest):
        parse_since("yesterday", now)


def test_a_teams_budget_holds_across_its_keys() -> None:
    config = GatewayConfig.model_validate(
        {
            "teams": {"t": {"budget": {"tokens_per_day": 50}}},
            "api_keys": [
                {"name": "a", "sha256": "a" * 64, "team": "t"},
                {"name": "b", "sha256": "b" * 64, "team": "t", "budget": {"max_concurrent": 5}},
            ],
        }
    )
    usage = build_usage(config, GatewayMetrics(), KeyRing(config))
    body = b'{"model": "m", "max_tokens": 10}'  # an estimate of 8 + 10 tokens

    async def one(key: ApiKey, status: int = 200) -> None:
        call = new_call(
            "/v1/completions",
            body,
            {"max_tokens": 10},
            "m",
            request_id="r",
            stream=False,
            api_key=key,
        )
        tab = usage.tab(call, "m")
        await tab.admit()
        tab.usage("m", {"prompt_tokens": 5, "completion_tokens": 10})
        tab.close(status)

    a, b = config.api_keys

    async def run() -> None:
        await one(a)
        await one(b)
        await one(a)
        await one(b)  # 45 spent
        with pytest.raises(BudgetExceeded, match="team `t`: tokens_per_day is 50"):
            await one(b)
        with pytest.raises(BudgetExceeded, match="team `t`"):
            await one(a)

    asyncio.run(run())
    # b's own reservation (max_concurrent) was given back when the team refused it
    assert usage.budgets.admit_here("b", _budget(max_concurrent=1), 1, 0.0) is not None


def test_an_unknown_team_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="names team `nope`"):
        GatewayConfig.model_validate({"api_keys": [{"name": "a", "sha256": "a", "team": "nope"}]})
