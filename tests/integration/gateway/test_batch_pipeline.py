"""Batch rows enter the one pipeline: a row naming an alias or a fallback chain is served like
an HTTP request, and rows count against the rate limits of the key that submitted the batch
(unless `batch.charge_keys` is off)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from orchestra.gateway.protection.keys import hash_key
from tests.conftest import GatewayProcess, reset_engine
from tests.fake_engine import FakeEngineProcess, free_port
from tests.integration.gateway.batch_helpers import (
    batch_config,
    chat_line,
    jsonl,
    read_lines,
    submit,
    wait_status,
)

pytestmark = pytest.mark.timeout(120)
KEY = "sk-batch-owner"


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess(name="m1") as one:
        yield one


def _gateway(engine: FakeEngineProcess, store: Path, **batch: Any) -> GatewayProcess:
    config = batch_config(engine, store, row_attempts=1, **batch)
    config["gateway"]["api_keys"] = [
        {"name": "owner", "sha256": hash_key(KEY), "requests_per_minute": 3}
    ]
    config["servers"].append({"name": "gone", "url": f"http://127.0.0.1:{free_port()}"})
    config["aliases"] = {"assistant": "m1"}
    config["fallbacks"] = {"gone": ["m1"]}
    return GatewayProcess(config)


def _client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)


def test_rows_take_aliases_and_chains_and_are_charged_to_the_key(
    engine: FakeEngineProcess, tmp_path: Path
) -> None:
    reset_engine(engine)
    with _gateway(engine, tmp_path) as gw:
        client = _client(gw)
        lines = [chat_line(0, "assistant"), chat_line(1, "gone")] + [
            chat_line(i) for i in range(2, 6)
        ]
        done = wait_status(client, submit(client, jsonl(lines)).id)
        output = read_lines(client, done.output_file_id)
        errors = read_lines(client, done.error_file_id)
    served = {o["custom_id"]: o["response"]["body"]["model"] for o in output}
    # 3 requests a minute for the key: the upload and the batch itself are not charged, rows are
    assert len(output) == 3 and len(errors) == 3, (output, errors)
    assert all(e["response"]["status_code"] == 429 for e in errors)
    assert all("owner" in e["response"]["body"]["error"]["message"] for e in errors)
    assert set(served.values()) == {"m1"}  # the alias and the chain's next model answer as m1


def test_charging_rows_can_be_switched_off(engine: FakeEngineProcess, tmp_path: Path) -> None:
    reset_engine(engine)
    with _gateway(engine, tmp_path, charge_keys=False) as gw:
        client = _client(gw)
        done = wait_status(client, submit(client, jsonl([chat_line(i) for i in range(6)])).id)
        assert len(read_lines(client, done.output_file_id)) == 6
        assert done.error_file_id is None
