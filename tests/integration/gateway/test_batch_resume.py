"""A gateway SIGKILLed mid-batch and started again on the same store finishes the batch: no
row with a recorded result runs again, none is lost (counted at the fake engine)."""

from __future__ import annotations

import copy
import os
import signal
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
        twice = {row: n for row, n in runs.items() if n > 1}
        assert not twice, f"rows the engine finished twice: {twice}"
