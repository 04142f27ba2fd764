"""`orchestra batch run|submit|status|download` as a user runs them, against a real gateway and
a fake engine: JSONL, CSV and Parquet in and out, templates, per-row parameters, --resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO_ROOT, GatewayProcess, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess
from tests.integration.gateway.batch_helpers import batch_config, chat_line, jsonl

pytestmark = pytest.mark.timeout(120)
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess("--served-model-name", "m1", name="m1") as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    engine: FakeEngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(batch_config(engine, tmp_path_factory.mktemp("store"))) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean(engine: FakeEngineProcess) -> None:
    reset_engine(engine)


def cli(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli", "batch", *args, "--url", gateway.url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def sent(engine: FakeEngineProcess) -> int:
    return int(engine.stats()["by_path"].get(CHAT, 0))


def test_csv_with_template_keeps_columns_and_resumes(
    gateway: GatewayProcess, engine: FakeEngineProcess, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "max_tokens"])
        writer.writerows([[f"q{i}", f"post number {i}", "" if i % 2 else "2"] for i in range(6)])
    out = tmp_path / "out.csv"
    engine.set_fault("error", status=400, count=2)  # two rows fail for good (a 4xx)
    args = [
        "run",
        str(source),
        "--model",
        "m1",
        "--output",
        str(out),
        "--id-column",
        "id",
        "--template",
        "Label this: {text}",
        "--max-tokens",
        "4",
        "-q",
    ]
    first = cli(gateway, *args)
    assert first.returncode == 1, first.stderr  # some rows failed
    assert sent(engine) == 6

    again = cli(gateway, *args)
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = cli(gateway, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "4 already done" in resumed.stdout
    assert sent(engine) == 8  # only the two failed rows ran again
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["custom_id"] for r in rows) == [f"q{i}" for i in range(6)]
    for row in rows:
        assert row["text"].startswith("post number") and not row["error"]
        want = 2 if row["id"] in ("q0", "q2", "q4") else 4  # per-row max_tokens wins
        assert int(row["completion_tokens"]) == want
        assert row["answer"].startswith("tok0")


def test_parquet_in_and_out(
    gateway: GatewayProcess, engine: FakeEngineProcess, tmp_path: Path
) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"question": [f"what is {i}" for i in range(5)], "n": list(range(5))}), source
    )
    out = tmp_path / "out.parquet"
    done = cli(
        gateway,
        "run",
        str(source),
        "--model",
        "m1",
        "--output",
        str(out),
        "--max-tokens",
        "3",
        "-q",
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out).to_pylist()
    assert [r["n"] for r in sorted(table, key=lambda r: r["n"])] == list(range(5))
    assert all(r["answer"] and r["completion_tokens"] == 3 for r in table)
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()
    assert sent(engine) == 5


def test_jsonl_openai_lines_and_plain_rows(
    gateway: GatewayProcess, engine: FakeEngineProcess, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    plain = [{"prompt": "hello there", "temperature": 0.5}]
    source.write_bytes(jsonl([chat_line(0), chat_line(1)]) + jsonl(plain))  # type: ignore[list-item]
    out = tmp_path / "out.jsonl"
    done = cli(gateway, "run", str(source), "--model", "m1", "--output", str(out), "-q")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == ["row-0", "row-1", "row-2"]
    assert all(r["status_code"] == 200 and r["finish_reason"] for r in rows)


def test_submit_status_download(gateway: GatewayProcess, tmp_path: Path) -> None:
    source = tmp_path / "batch.jsonl"
    source.write_bytes(jsonl([chat_line(i) for i in range(3)]))
    submitted = cli(gateway, "submit", str(source))
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    assert batch_id.startswith("batch_")

    def completed() -> bool:
        status = cli(gateway, "status", batch_id)
        return status.returncode == 0 and "completed" in status.stdout

    wait_until(completed, timeout=30, what="batch completed")
    assert "3/3 done" in cli(gateway, "status", batch_id).stdout
    assert batch_id in cli(gateway, "status").stdout
    out = tmp_path / "results.jsonl"
    downloaded = cli(gateway, "download", batch_id, "--output", str(out))
    assert downloaded.returncode == 0, downloaded.stderr
    lines: list[dict[str, Any]] = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["row-0", "row-1", "row-2"]
