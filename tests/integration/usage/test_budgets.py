"""Budgets and keys made at run time, with the OpenAI SDK (and Anthropic's path) against a fake
engine: a spent budget is a 429 `budget_exceeded` with its limit, reset and Retry-After; batch
rows stop at the budget with that code in the error file; `orchestra keys` makes, lists,
disables, enables and deletes keys without a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fake_engine import FakeEngineProcess
from tests.integration.gateway.batch_helpers import (
    chat_line,
    jsonl,
    read_lines,
    submit,
    wait_status,
)
from tests.integration.usage.helpers import KEY_A, KEY_B, cli, client, gateway, totals

pytestmark = pytest.mark.timeout(240)


def test_a_spent_budget_is_a_429_in_each_apis_shape(
    engine: FakeEngineProcess, tmp_path: Path
) -> None:
    with gateway(engine, {"dir": str(tmp_path)}, budget_a={"tokens_per_day": 30}) as gw:
        a = client(gw, KEY_A)
        for _ in range(4):  # 8 tokens each: 0, 8, 16, 24 spent before each, all below 30
            a.completions.create(model="m", prompt="one two three", max_tokens=5)
        with pytest.raises(openai.RateLimitError) as refused:
            a.completions.create(model="m", prompt="one two three", max_tokens=5)
        reply = refused.value.response
        error = reply.json()["error"]
        assert error["code"] == "budget_exceeded"
        assert "tokens_per_day is 30 (used 32)" in error["message"]
        assert reply.headers["x-orchestra-budget-limit"] == "tokens_per_day=30"
        assert reply.headers["x-orchestra-budget-reset"].endswith("T00:00:00Z")
        assert 1 <= int(reply.headers["retry-after"]) <= 86400
        anthropic = httpx.post(
            gw.url + "/v1/messages",
            headers={"x-api-key": KEY_A, "anthropic-version": "2023-06-01"},
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert anthropic.status_code == 429
        body = anthropic.json()
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert "budget exceeded" in body["error"]["message"]
        # the other key has no budget; the refusals are errors on team-a's ledger
        client(gw, KEY_B).completions.create(model="m", prompt="one", max_tokens=2)
        got = totals(gw)
        assert got[("team-a", "m")]["requests"] == 6 and got[("team-a", "m")]["errors"] == 2
        assert (
            got[("team-a", "m")]["prompt_tokens"] + got[("team-a", "m")]["completion_tokens"] == 32
        )


def test_keys_made_at_run_time(engine: FakeEngineProcess, tmp_path: Path) -> None:
    with gateway(engine, {"dir": str(tmp_path)}) as gw:
        made = cli(gw.url, "keys", "create", "--name", "team-c", "--budget-tokens-day", "2000000")
        assert made.returncode == 0, made.stderr
        secret = made.stdout.strip().splitlines()[-1]
        assert secret.startswith("sk-orch-")
        served = client(gw, secret).completions.create(model="m", prompt="one", max_tokens=2)
        assert served.usage is not None and served.usage.total_tokens == 3
        listed = cli(gw.url, "keys", "list", "-o", "json")
        keys = {k["name"]: k for k in json.loads(listed.stdout)}
        assert keys["team-c"]["source"] == "runtime"
        assert keys["team-c"]["budget"] == {"tokens_per_day": 2000000}
        assert keys["team-a"]["source"] == "config"
        assert secret not in listed.stdout and "sha256" not in listed.stdout
        assert totals(gw)[("team-c", "m")]["requests"] == 1
        assert cli(gw.url, "keys", "disable", "team-c").returncode == 0
        with pytest.raises(openai.AuthenticationError, match="disabled"):
            client(gw, secret).completions.create(model="m", prompt="one", max_tokens=2)
        assert cli(gw.url, "keys", "enable", "team-c").returncode == 0
        client(gw, secret).completions.create(model="m", prompt="one", max_tokens=2)
        taken = cli(gw.url, "keys", "create", "team-a")
        assert taken.returncode == 1 and "HTTP 409" in taken.stderr
        twice = cli(gw.url, "keys", "create", "team-c")
        assert twice.returncode == 1 and "HTTP 409" in twice.stderr
        assert cli(gw.url, "keys", "list", admin_key="wrong").returncode == 1
        assert cli(gw.url, "keys", "delete", "team-c").returncode == 0
        with pytest.raises(openai.AuthenticationError):
            client(gw, secret).completions.create(model="m", prompt="one", max_tokens=2)
        assert cli(gw.url, "keys", "delete", "team-c").returncode == 1  # gone
        client(gw, KEY_A).completions.create(model="m", prompt="one", max_tokens=2)  # config's
    with gateway(engine, {"dir": str(tmp_path)}) as gw:  # a key made at run time outlives one
        again = cli(gw.url, "keys", "create", "team-d", "-o", "json")
        secret = json.loads(again.stdout)["key"]
    with gateway(engine, {"dir": str(tmp_path)}) as gw:
        client(gw, secret).completions.create(model="m", prompt="one", max_tokens=2)


def test_batch_rows_stop_at_the_budget(engine: FakeEngineProcess, tmp_path: Path) -> None:
    batch = {"dir": str(tmp_path / "batch"), "poll_s": 0.05, "row_backoff_s": 0.05}
    budget = {"tokens_per_day": 20}
    with gateway(engine, {"dir": str(tmp_path)}, budget_a=budget, batch=batch) as gw:
        a = client(gw, KEY_A)
        lines = [chat_line(i, model="m") for i in range(8)]  # 3 prompt + 3 completion tokens
        done = wait_status(a, submit(a, jsonl(lines)).id, timeout=60)
        ok = read_lines(a, done.output_file_id)
        failed = read_lines(a, done.error_file_id)
        assert len(ok) + len(failed) == 8
        assert 1 <= len(ok) <= 4  # at most what fits below 20 tokens, plus one admitted row
        codes = {_code(line) for line in failed}
        assert codes == {"budget_exceeded"}
        spent = totals(gw)[("team-a", "m")]
        assert spent["prompt_tokens"] + spent["completion_tokens"] == 6 * len(ok)


def _code(line: dict[str, Any]) -> str:
    return str(line["response"]["body"]["error"]["code"])
