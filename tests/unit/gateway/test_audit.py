"""The audit trail's parts on their own: the line's shape (errors by code, client strings cut),
the bounded queue whose drops are counted, the writer's wake-up, bodies only when asked, and
the config's switch. The file's rotation and several writers: test_audit_files.py."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestra.audit.lines import (
    ADMIN,
    BATCH_ROW,
    FIELDS,
    REQUEST,
    Entry,
    Stamps,
    encode,
    iso,
)
from orchestra.audit.writer import AuditLog
from orchestra.config import AuditConfig, ConfigError, GatewayConfig, parse_config
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.protocol import error_json

_REQUEST: dict[str, object] = {
    "request_id": "r1",
    "trace_id": None,
    "key": "team-a",
    "client": "10.0.0.7",
    "method": "POST",
    "path": "/v1/chat/completions",
    "model": "chat",
    "served_by": "smollm2",
    "replica": "127.0.0.1:8001",
    "backend": "vllm",
    "status": 200,
    "error": None,
    "prompt_tokens": 12,
    "completion_tokens": 34,
    "latency_ms": 123.4567,
    "ttft_ms": None,
    "stream": False,
    "cache": "miss",
    "attempts": 1,
    "fallback": None,
}


def _values(kind: str, fields: dict[str, object], **changes: object) -> tuple[object, ...]:
    """The tuple a caller hands over: `fields` in FIELDS[kind]'s order."""
    given = {**fields, **changes}
    assert set(given) == set(FIELDS[kind])
    return tuple(given[name] for name in FIELDS[kind])


def _request(**changes: object) -> Entry:
    return (REQUEST, 1_796_083_200.25, _values(REQUEST, _REQUEST, **changes), None)


def _line(entry: Entry) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(encode(entry, Stamps()))
    return parsed


def test_a_request_line_has_every_field_in_json() -> None:
    line = _line(_request())
    assert list(line) == ["time", "kind", *FIELDS[REQUEST]]
    assert line["time"] == "2026-12-01T00:00:00.250Z" == iso(1_796_083_200.25)
    assert line["kind"] == "request" and line["key"] == "team-a" and line["cache"] == "miss"
    assert line["latency_ms"] == 123.457 and line["fallback"] is None and line["attempts"] == 1
    raw = encode(_request(), Stamps())
    assert raw.endswith(b"}\n") and raw.count(b"\n") == 1


def test_errors_are_their_code_and_marks_come_from_the_reply() -> None:
    body = error_json("no model `x`", "invalid_request_error", "model_not_found")
    assert _line(_request(status=404, error=body))["error"] == "model_not_found"
    untyped = error_json("boom", "server_error", None)
    assert _line(_request(status=500, error=untyped))["error"] == "server_error"
    # A 200 never carries an error, whatever the body; a client that left is named.
    assert _line(_request(error=body))["error"] is None
    assert _line(_request(status=499))["error"] == "client_closed"
    retried = _line(_request(attempts=3, fallback="llama3.2:1b", backend="ollama"))
    assert (retried["attempts"], retried["fallback"]) == (3, "llama3.2:1b")
    assert _line(_request(stream=True, ttft_ms=50.00049))["ttft_ms"] == 50.0
    assert len(_line(_request(model="m" * 5000, path="/" * 900))["model"]) == 256


def test_the_second_is_formatted_once_and_the_millis_each_time() -> None:
    stamps = Stamps()
    assert [stamps.iso(t) for t in (1.0, 1.999, 2.5, 1.001)] == [
        "1970-01-01T00:00:01.000Z",
        "1970-01-01T00:00:01.999Z",
        "1970-01-01T00:00:02.500Z",
        "1970-01-01T00:00:01.001Z",
    ]


def test_admin_and_batch_lines() -> None:
    admin_fields = {
        "request_id": "r2",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "who": "admin_key",
        "client": "127.0.0.1",
        "method": "POST",
        "path": "/admin/keys",
        "action": "key.create",
        "target": "team-c",
        "status": 201,
        "error": None,
        "latency_ms": 10.0,
        "adapter": None,
    }
    admin = _line((ADMIN, 0.0, _values(ADMIN, admin_fields), None))
    assert (admin["kind"], admin["action"], admin["target"], admin["who"]) == (
        "admin",
        "key.create",
        "team-c",
        "admin_key",
    )
    assert admin["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and "fallback" not in admin
    assert admin["adapter"] is None
    row_fields = {
        "request_id": "batch_1-0",
        "trace_id": None,
        "key": "team-a",
        "path": "/v1/chat/completions",
        "model": "m",
        "served_by": "m",
        "replica": None,
        "backend": "vllm",
        "status": 200,
        "error": b"{}",
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "latency_ms": 500.0,
        "attempts": 2,
        "fallback": None,
    }
    row = _line((BATCH_ROW, 0.0, _values(BATCH_ROW, row_fields), None))
    assert row["kind"] == "batch_row" and row["error"] is None and row["completion_tokens"] == 2
    # A tuple of the wrong length is a bug of the caller: it fails loudly, in the writer.
    with pytest.raises(ValueError):
        encode((BATCH_ROW, 0.0, ("too", "short"), None), Stamps())


async def _polled(condition: Callable[[], bool], timeout_s: float) -> None:
    """Poll `condition` until it holds; TimeoutError at the deadline."""
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0.005)


def _config(tmp_path: Path, **changes: object) -> AuditConfig:
    return AuditConfig(path=tmp_path / "audit.jsonl", **changes)  # type: ignore[arg-type]


def test_a_full_queue_drops_and_counts_and_never_waits(tmp_path: Path) -> None:
    async def scenario() -> tuple[float, int]:
        metrics = GatewayMetrics()
        log = AuditLog(_config(tmp_path, queue_size=3), metrics.audit_dropped)
        for i in range(5):
            log.emit(REQUEST, _values(REQUEST, _REQUEST, request_id=f"r{i}"))
        waiting = log.waiting()
        await log.close()
        return metrics.registry.get_sample_value("orchestra_audit_dropped_total"), waiting

    dropped, waiting = asyncio.run(scenario())
    assert (dropped, waiting) == (2, 3)
    written = [
        orjson.loads(x)["request_id"] for x in (tmp_path / "audit.jsonl").read_bytes().splitlines()
    ]
    assert written == ["r0", "r1", "r2"]


def test_a_line_that_cannot_be_encoded_is_dropped_alone(tmp_path: Path) -> None:
    async def scenario() -> float:
        metrics = GatewayMetrics()
        log = AuditLog(_config(tmp_path), metrics.audit_dropped)
        log.emit(REQUEST, _values(REQUEST, _REQUEST, request_id="before"))
        log.emit(REQUEST, ("a", "tuple", "too", "short"))
        log.emit(REQUEST, _values(REQUEST, _REQUEST, request_id="after"))
        await log.close()
        return float(metrics.registry.get_sample_value("orchestra_audit_dropped_total"))

    assert asyncio.run(scenario()) == 1
    written = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x)["request_id"] for x in written] == ["before", "after"]


def test_the_writer_writes_within_flush_s_and_bodies_only_when_asked(tmp_path: Path) -> None:
    async def scenario(capture: bool) -> list[dict[str, object]]:
        path = tmp_path / f"{capture}.jsonl"
        config = AuditConfig(path=path, flush_s=0.05, capture_bodies=capture, max_body_bytes=4)
        log = AuditLog(config, GatewayMetrics().audit_dropped)
        writer = asyncio.create_task(log.run())
        try:
            log.emit(REQUEST, _values(REQUEST, _REQUEST), b'{"prompt": "secret"}', b"answer")
            await _polled(lambda: path.exists() and bool(path.read_bytes()), 10)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await log.close()
        return [orjson.loads(x) for x in path.read_bytes().splitlines()]

    plain = asyncio.run(scenario(False))
    assert len(plain) == 1 and "request_body" not in plain[0]
    captured = asyncio.run(scenario(True))
    assert (captured[0]["request_body"], captured[0]["reply_body"]) == ('{"pr', "answ")


def test_half_a_queue_wakes_the_writer_before_flush_s(tmp_path: Path) -> None:
    async def scenario() -> int:
        config = _config(tmp_path, queue_size=10, flush_s=1.0)
        log = AuditLog(config, GatewayMetrics().audit_dropped)
        writer = asyncio.create_task(log.run())
        try:
            await asyncio.sleep(0)  # the writer waits
            for i in range(5):
                log.emit(REQUEST, _values(REQUEST, _REQUEST, request_id=f"r{i}"))
            await _polled(lambda: not log.waiting(), 0.9)  # before flush_s: the fifth woke it
            return log.waiting()
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await log.close()

    assert asyncio.run(scenario()) == 0


def test_audit_is_off_unless_configured_and_errors_name_the_yaml_path() -> None:
    assert GatewayConfig().audit is None
    on = parse_config({"gateway": {"audit": {}}})
    assert on.gateway.audit is not None and on.gateway.audit.path == Path("logs/audit.jsonl")
    assert on.gateway.audit.capture_bodies is False
    with pytest.raises(ConfigError, match=r"gateway\.audit\.max_bytes"):
        parse_config({"gateway": {"audit": {"max_bytes": 10}}})
    with pytest.raises(ConfigError, match=r"gateway\.audit\.flush_s"):
        parse_config({"gateway": {"audit": {"flush_s": 5}}})
    with pytest.raises(ConfigError, match=r"gateway\.audit\.pth"):
        parse_config({"gateway": {"audit": {"pth": "x"}}})


def test_an_unwritable_path_fails_at_start_naming_the_setting(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(RuntimeError, match=r"gateway\.audit\.path"):
        AuditLog(_config(blocked), GatewayMetrics().audit_dropped)
    assert os.listdir(tmp_path) == ["file"]
