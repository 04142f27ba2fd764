"""The Files + Batches API with the official `openai` SDK against a real gateway and a fake
engine: round trips (sync, async), validation, run-time errors, cancel, expiry, upload limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess
from tests.integration.gateway.batch_helpers import (
    batch_config,
    chat_line,
    jsonl,
    read_lines,
    submit,
    wait_status,
)

pytestmark = pytest.mark.timeout(90)
UPLOAD_LIMIT = 100_000


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess("--served-model-name", "m1", name="m1") as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    engine: FakeEngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    store = tmp_path_factory.mktemp("batch-store")
    with GatewayProcess(batch_config(engine, store, max_upload_bytes=UPLOAD_LIMIT)) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean(engine: FakeEngineProcess, gateway: GatewayProcess) -> Iterator[None]:
    reset_engine(engine)
    yield
    engine.set_fault("none")
    gateway.wait_ready("m1")


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0, timeout=10
    ) as c:
        yield c


def test_sdk_round_trip(client: openai.OpenAI, engine: FakeEngineProcess) -> None:
    lines = [chat_line(i) for i in range(5)] + [chat_line(5, model="renamed")]
    batch = submit(client, jsonl(lines))
    assert batch.status == "validating" and batch.object == "batch"
    assert batch.expires_at == batch.created_at + 24 * 3600
    done = wait_status(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (6, 5)
    assert done.request_counts.failed == 1
    assert done.completed_at and done.finalizing_at and done.in_progress_at
    assert done.usage is not None and done.usage.output_tokens == 15

    output = read_lines(client, done.output_file_id)
    assert [o["custom_id"] for o in output] == [f"row-{i}" for i in range(5)]
    for out in output:
        assert out["id"].startswith("batch_req_") and out["error"] is None
        assert out["response"]["status_code"] == 200
        assert out["response"]["body"]["object"] == "chat.completion"
        assert out["response"]["request_id"]
    (failed,) = read_lines(client, done.error_file_id)
    assert failed["custom_id"] == "row-5"
    assert failed["response"]["status_code"] == 404  # the engine's own answer, unchanged
    assert "does not exist" in failed["response"]["body"]["error"]["message"]

    meta = client.files.retrieve(done.output_file_id or "")
    assert meta.purpose == "batch_output" and meta.bytes > 0
    assert done.output_file_id in {f.id for f in client.files.list(purpose="batch_output")}
    assert engine.stats()["by_path"]["/v1/chat/completions"] == 6


def test_async_sdk_round_trip(gateway: GatewayProcess) -> None:
    async def go() -> None:
        async with openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0, timeout=10
        ) as client:
            uploaded = await client.files.create(
                file=("in.jsonl", jsonl([chat_line(i) for i in range(3)])), purpose="batch"
            )
            batch = await client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"job": "async"},
            )
            for _ in range(600):
                batch = await client.batches.retrieve(batch.id)
                if batch.status == "completed":
                    break
                await asyncio.sleep(0.05)
            assert batch.status == "completed" and batch.metadata == {"job": "async"}
            content = await client.files.content(batch.output_file_id or "")
            assert len(content.text.splitlines()) == 3
            page = await client.batches.list(limit=100)
            assert batch.id in [b.id async for b in page]
            deleted = await client.files.delete(uploaded.id)
            assert deleted.deleted and deleted.id == uploaded.id
            with pytest.raises(openai.NotFoundError):
                await client.files.retrieve(uploaded.id)

    asyncio.run(go())


def test_every_validation_error_is_reported_and_nothing_runs(
    client: openai.OpenAI, engine: FakeEngineProcess
) -> None:
    good = chat_line(0)
    wrong_url = {**chat_line(3), "url": "/v1/embeddings"}
    no_method = {k: v for k, v in chat_line(2).items() if k != "method"}
    streaming = chat_line(4, stream=True)
    unknown = chat_line(5, model="no-such-model")
    raw = [
        json.dumps(good).encode(),
        b"{not json",
        json.dumps(no_method).encode(),
        json.dumps(wrong_url).encode(),
        json.dumps(streaming).encode(),
        json.dumps(unknown).encode(),
        json.dumps(good).encode(),
    ]
    batch = submit(client, b"\n".join(raw) + b"\n")
    failed = wait_status(client, batch.id)
    assert failed.status == "failed" and failed.failed_at
    assert failed.errors is not None and failed.errors.data is not None
    got = [(e.line, e.code, e.param) for e in failed.errors.data]
    assert got == [
        (2, "invalid_json_line", None),
        (3, "missing_required_parameter", "method"),
        (4, "mismatched_url", "url"),
        (5, "invalid_value", "body.stream"),
        (6, "model_not_found", "body.model"),
        (7, "duplicate_custom_id", "custom_id"),
    ]
    assert all(e.message for e in failed.errors.data)
    assert failed.request_counts is not None and failed.request_counts.total == 0
    assert engine.stats()["by_path"].get("/v1/chat/completions", 0) == 0


def test_bad_create_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    uploaded = client.files.create(file=("x.jsonl", jsonl([chat_line(0)])), purpose="batch")
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/responses",
            completion_window="24h",
        )
    assert bad.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="soon",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


@pytest.mark.parametrize("size", [3 * UPLOAD_LIMIT, UPLOAD_LIMIT + 1000])
def test_upload_over_the_limit_is_413(gateway: GatewayProcess, size: int) -> None:
    """Both checks: the declared length (far over) and the parsed file's size (just over)."""
    reply = httpx.post(
        gateway.url + "/v1/files",
        files={"file": ("big.jsonl", b"x" * size)},
        data={"purpose": "batch"},
        timeout=10,
    )
    assert reply.status_code == 413
    error = reply.json()["error"]
    assert error["code"] == "request_too_large" and "batch.max_upload_bytes" in error["message"]


def test_upload_needs_purpose_batch(gateway: GatewayProcess) -> None:
    reply = httpx.post(
        gateway.url + "/v1/files",
        files={"file": ("a.jsonl", b"{}\n")},
        data={"purpose": "fine-tune"},
        timeout=10,
    )
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "purpose"


def test_engine_failures_after_retries_go_to_the_error_file(
    client: openai.OpenAI, engine: FakeEngineProcess
) -> None:
    engine.set_fault("error", status=400, count=1)  # the first row gets an engine 400
    batch = submit(client, jsonl([chat_line(i) for i in range(4)]))
    done = wait_status(client, batch.id)
    output, errors = read_lines(client, done.output_file_id), read_lines(client, done.error_file_id)
    assert len(output) + len(errors) == 4
    assert {o["custom_id"] for o in output} | {e["custom_id"] for e in errors} == {
        f"row-{i}" for i in range(4)
    }
    assert [e["response"]["status_code"] for e in errors] == [400]

    engine.set_fault("500")  # every try fails: 3 row attempts, each retried by the proxy too
    batch = submit(client, jsonl([chat_line(i) for i in range(2)]))
    done = wait_status(client, batch.id)
    assert done.status == "completed" and done.output_file_id is None
    errors = read_lines(client, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["row-0", "row-1"]
    # 500 from the engine, or 503 once three 500s in a row took the replica out of rotation
    assert all(e["response"]["status_code"] in (500, 503) for e in errors)
    assert all(e["response"]["body"]["error"]["message"] for e in errors)


def test_cancel_mid_run_keeps_partial_output(
    client: openai.OpenAI, engine: FakeEngineProcess
) -> None:
    engine.configure(ttft_ms=150)
    batch = submit(client, jsonl([chat_line(i) for i in range(40)]))
    wait_until(
        lambda: (client.batches.retrieve(batch.id).request_counts or _zero()).completed >= 2,
        timeout=30,
        what="a few rows done",
    )
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait_status(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    counts = done.request_counts
    assert counts is not None and counts.total == 40
    output, errors = read_lines(client, done.output_file_id), read_lines(client, done.error_file_id)
    assert len(output) == counts.completed >= 2
    assert len(output) + len(errors) == 40
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    with pytest.raises(openai.BadRequestError):
        done_again = submit(client, jsonl([chat_line(0)]))
        client.batches.cancel(wait_status(client, done_again.id).id)


def test_expiry_marks_the_rest_expired(client: openai.OpenAI, engine: FakeEngineProcess) -> None:
    engine.configure(ttft_ms=3000)  # no row can finish within the window: in flight at expiry
    batch = submit(client, jsonl([chat_line(i) for i in range(60)]), window="2s")
    done = wait_status(client, batch.id)
    assert done.status == "expired" and done.expired_at, read_lines(client, done.error_file_id)[:2]
    output, errors = read_lines(client, done.output_file_id), read_lines(client, done.error_file_id)
    assert len(output) + len(errors) == 60 and errors
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert all(e["response"] is None for e in errors)


def test_list_pagination(client: openai.OpenAI) -> None:
    ids = [submit(client, jsonl([chat_line(0)])).id for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    assert [b.id for b in client.batches.list(limit=1, after=ids[1]).data] == [ids[0]]
    for batch_id in ids:
        wait_status(client, batch_id)


def _zero() -> openai.types.BatchRequestCounts:
    return openai.types.BatchRequestCounts(total=0, completed=0, failed=0)


def test_disabled_batch_api_answers_404(engine: FakeEngineProcess, tmp_path: Path) -> None:
    with GatewayProcess(batch_config(engine, tmp_path, enabled=False)) as gw:
        reply = httpx.get(gw.url + "/v1/batches", timeout=5)
        assert reply.status_code == 404 and "batch.enabled" in reply.json()["error"]["message"]
    assert not (tmp_path / "batch.sqlite3").exists()
