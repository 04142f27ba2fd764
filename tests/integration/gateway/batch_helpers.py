"""Helpers for the batch API tests: configs, input files, and reading results back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import openai

from tests.conftest import fast_gateway_section, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

FINAL = {"completed", "failed", "expired", "cancelled"}


def batch_config(engine: FakeEngineProcess, store: Path, **batch: Any) -> dict[str, Any]:
    return {
        "gateway": fast_gateway_section(free_port()),
        "servers": [
            {"name": "m1", "url": engine.url},
            {"name": "renamed", "url": engine.url},  # the engine knows no such model: a 404
        ],
        "batch": {
            "dir": str(store),
            "poll_s": 0.05,
            "gauge_poll_s": 0.1,
            "row_backoff_s": 0.05,
            "cancel_grace_s": 0.5,
            **batch,
        },
    }


def chat_line(i: int, model: str = "m1", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": f"row-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": f"question number {i}"}],
            "max_tokens": 3,
            **body,
        },
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def submit(
    client: openai.OpenAI,
    content: bytes,
    window: str = "24h",
    endpoint: str = "/v1/chat/completions",
) -> Any:
    uploaded = client.files.create(file=("input.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window=window,  # type: ignore[arg-type]
    )


def wait_status(
    client: openai.OpenAI, batch_id: str, statuses: set[str] = FINAL, timeout: float = 30.0
) -> Any:
    def done() -> Any:
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in statuses else None

    return wait_until(done, timeout=timeout, interval=0.05, what=f"batch in {statuses}")


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def completed_per_row(engine: FakeEngineProcess, batch_id: str) -> Counter[str]:
    """How many times the engine finished each row of `batch_id` (by its x-request-id)."""
    runs: Counter[str] = Counter()
    for record in engine.stats()["records"]:
        rid = record.get("x_request_id") or ""
        if rid.startswith(batch_id + "-") and record.get("outcome") == "completed":
            runs[rid.rsplit("-a", 1)[0]] += 1
    return runs
