"""The Batch API and the Ray Data path on the real vLLM CPU engine (SmolLM2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import HOT, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _line(i: int) -> bytes:
    body = {
        "model": HOT,
        "messages": [{"role": "user", "content": f"What is {i} plus {i}?"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    line = {"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(line).encode() + b"\n"


def test_sdk_batch_round_trip_on_the_real_engine(stack: Stack) -> None:
    client = stack.client
    uploaded = client.files.create(
        file=("in.jsonl", b"".join(_line(i) for i in range(4))), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_until(
        lambda: (b := client.batches.retrieve(batch.id)).status in ("completed", "failed") and b,
        timeout=300,
        interval=0.2,
        what="batch done",
    )
    assert done.status == "completed", done.errors
    assert done.request_counts is not None and done.request_counts.completed == 4
    text = client.files.content(done.output_file_id or "").text
    lines = [json.loads(x) for x in text.splitlines()]
    assert [x["custom_id"] for x in lines] == ["q0", "q1", "q2", "q3"]
    for line in lines:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and body["model"] == HOT
        assert body["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] > 0


def test_ray_data_path_on_the_real_engine(stack: Stack, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the Ray path needs the ray extra")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orchestra.batch.ray_data import GatewayFleet, run_parquet

    source = tmp_path / "in"
    source.mkdir()
    questions = [f"Name a colour, number {i}." for i in range(6)]
    pq.write_table(pa.table({"id": list(range(6)), "question": questions}), source / "a.parquet")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        fleet = GatewayFleet([stack.gateway.url], model=HOT, sampling={"max_tokens": 8})
        run_parquet(str(source), str(tmp_path / "out"), fleet, id_column="id", batch_size=3)
    finally:
        ray.shutdown()
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert sorted(r["id"] for r in rows) == list(range(6))
    assert all(r["error"] is None and r["answer"] and r["completion_tokens"] for r in rows)
