"""A gateway SIGKILLed mid-batch and started again on the same store finishes the batch: no
row with a recorded result runs again, none is lost (counted at the fake engine).

A row the engine finished in the instant before the kill, whose result the gateway had not
committed yet, does run again: a kill allows at-least-once, not exactly-once. So the rows that
must never run twice are the ones the store holds a result for at the moment of the kill."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import sqlite3
from pathlib import Path

import openai
import pytest

from tests.conftest import GatewayProcess, wait_until
from tests.fake_engine import FakeEngineProcess, free_port
from tests.integration.gateway.batch_helpers import (
    batch_config,
    chat_line,
    completed_per_row,
    jsonl,
    read_lines,
    submit,
    wait_status,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
ROWS = 48  # under the fake engine's 100 kept request records


def _client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0, timeout=10)


def test_sigkill_mid_batch_resumes_without_rerunning_or_losing_rows(tmp_path: Path) -> None:
    with FakeEngineProcess("--served-model-name", "m1", "--ttft-ms", "100", name="m1") as engine:
        config = batch_config(engine, tmp_path / "store", max_concurrency=4)
        first = GatewayProcess(copy.deepcopy(config)).start()
        try:
            with _client(first) as client:
                batch = submit(client, jsonl([chat_line(i) for i in range(ROWS)]))

                def half_done() -> bool:
                    counts = client.batches.retrieve(batch.id).request_counts
                    return counts is not None and counts.completed >= ROWS // 2

                wait_until(half_done, timeout=60, what="half of the rows done")
            assert first.proc is not None
            os.killpg(first.proc.pid, signal.SIGKILL)
            first.proc.wait()
        finally:
            first.stop()
        before = completed_per_row(engine, batch.id)
        assert ROWS // 2 <= sum(before.values()) < ROWS
        recorded = _recorded_rows(tmp_path / "store" / "batch.sqlite3", batch.id)
        assert len(recorded) >= ROWS // 2

        config["gateway"]["port"] = free_port()
        with GatewayProcess(config) as second, _client(second) as client:
            done = wait_status(client, batch.id, timeout=60)
            assert done.status == "completed"
            assert done.request_counts is not None
            assert (done.request_counts.completed, done.request_counts.failed) == (ROWS, 0)
            output = read_lines(client, done.output_file_id)
            assert sorted(o["custom_id"] for o in output) == sorted(f"row-{i}" for i in range(ROWS))
            assert done.error_file_id is None
        runs = completed_per_row(engine, batch.id)
        assert len(runs) == ROWS, "every row ran"
        again = {row: runs[row] for row in recorded if runs[row] != 1}
        assert not again, f"rows with a recorded result that ran again: {again}"
        # The rest ran at most once per gateway life: the kill's window, never more.
        assert max(runs.values()) <= 2


def _recorded_rows(db: Path, batch_id: str) -> set[str]:
    """Rows with a committed result, as the gateway's store holds them after the kill."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        got = conn.execute(
            "SELECT line FROM rows WHERE batch_id=? AND outcome IS NOT NULL", (batch_id,)
        ).fetchall()
    return {f"{batch_id}-L{line}" for (line,) in got}
