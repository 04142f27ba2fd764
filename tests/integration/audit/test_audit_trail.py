"""The audit trail on a real gateway and the fake engine: every answered request and every admin
action has its line, with the key's name and never a key; `orchestra audit` reads them back."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from orchestra.lifetime import spawn, stop_group
from tests.conftest import REPO_ROOT, wait_until
from tests.fake_engine import FakeEngineProcess
from tests.integration.gateway.batch_helpers import chat_line, jsonl, submit, wait_status

from .helpers import ADMIN, KEY_A, KEY_B, gateway, lines

pytestmark = pytest.mark.timeout(180)

WRONG = "sk-audit-not-a-key"


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess("--served-model-name", "m", name="m") as e:
        yield e


def _post(url: str, key: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(url, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def _admin(url: str, method: str, path: str, body: object = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, url + path, json=body, headers=headers, timeout=30)


def test_every_answer_and_admin_action_has_its_line(
    engine: FakeEngineProcess, tmp_path: Path
) -> None:
    trail = tmp_path / "logs" / "audit.jsonl"
    with gateway(engine, trail) as gw:
        completions = gw.url + "/v1/completions"
        chat = gw.url + "/v1/chat/completions"
        answered: dict[str, int] = {}  # request id -> status, as the client saw them
        for reply in (
            _post(completions, KEY_A, {"model": "m", "prompt": "one two three", "max_tokens": 5}),
            _post(completions, KEY_B, {"model": "m", "prompt": "one", "max_tokens": 2}),
            _post(completions, KEY_A, {"model": "nope", "prompt": "x"}),  # 404
            _post(completions, WRONG, {"model": "m", "prompt": "x"}),  # 401
            httpx.get(gw.url + "/v1/models", headers={"authorization": f"Bearer {KEY_B}"}),
        ):
            answered[reply.headers["x-request-id"]] = reply.status_code
        stream_body = {
            "model": "m",
            "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"authorization": f"Bearer {KEY_A}"}
        with httpx.stream("POST", chat, json=stream_body, headers=headers, timeout=30) as s:
            assert s.status_code == 200
            s.read()
            answered[s.headers["x-request-id"]] = 200
        assert list(answered.values()) == [200, 200, 404, 401, 200, 200]

        made = _admin(gw.url, "POST", "/admin/keys", {"name": "team-c"})
        assert made.status_code == 201, made.text
        secret = made.json()["key"]
        assert _admin(gw.url, "POST", "/admin/keys/team-c/disable").status_code == 200
        assert _admin(gw.url, "POST", "/admin/keys/team-c/enable").status_code == 200
        assert _admin(gw.url, "DELETE", "/admin/keys/team-c").status_code == 200
        # No supervisor manages `m`: the console's action fails, and is audited all the same.
        assert _admin(gw.url, "POST", "/console/api/models/m/load").status_code == 503
        assert _admin(gw.url, "GET", "/admin/usage").status_code == 200  # a read: no line

        wait_until(lambda: len(lines(trail)) == 11, timeout=10, what="11 audit lines")
        # `orchestra audit tail -f`: the last lines, then a new one as it comes.
        with _tail_follow(trail, "-n", "2", "-o", "json") as tail_f:
            assert [r["action"] for r in _next(tail_f, 2)] == ["key.delete", "model.load"]
            again = httpx.get(gw.url + "/v1/models", headers={"authorization": f"Bearer {KEY_B}"})
            answered[again.headers["x-request-id"]] = 200
            assert [r["request_id"] for r in _next(tail_f, 1)] == [again.headers["x-request-id"]]
        records = lines(trail)
    assert len(lines(trail)) == 12  # nothing more, nothing twice (the stop wrote the rest)
    text = b"".join(p.read_bytes() for p in trail.parent.glob("audit.jsonl*"))
    for secret_text in (KEY_A, KEY_B, WRONG, ADMIN, secret):
        assert secret_text.encode() not in text  # names only, never a key

    requests = {r["request_id"]: r for r in records if r["kind"] == "request"}
    assert {k: r["status"] for k, r in requests.items()} == answered
    first, second, missing, wrong, listed, streamed, _ = (requests[k] for k in answered)
    assert first["key"] == "team-a" and first["model"] == "m" and first["served_by"] == "m"
    assert (first["prompt_tokens"], first["completion_tokens"]) == (3, 5)
    assert first["replica"] == engine.url.removeprefix("http://")
    assert first["backend"] == "vllm" and first["fallback"] is None and first["attempts"] == 1
    assert first["client"] == "127.0.0.1" and first["method"] == "POST"
    assert first["path"] == "/v1/completions" and first["error"] is None
    assert first["stream"] is False and first["ttft_ms"] is None and first["latency_ms"] > 0
    assert second["key"] == "team-b" and second["prompt_tokens"] == 1
    assert missing["status"] == 404 and missing["error"] == "model_not_found"
    assert missing["model"] == "nope" and missing["served_by"] is None  # what was asked
    assert wrong["status"] == 401 and wrong["key"] is None and wrong["error"] == "invalid_api_key"
    assert listed["path"] == "/v1/models" and listed["method"] == "GET"
    assert listed["attempts"] is None and missing["attempts"] == 0  # no call; none sent
    assert streamed["stream"] is True and streamed["ttft_ms"] is not None
    assert streamed["ttft_ms"] <= streamed["latency_ms"]
    assert (streamed["prompt_tokens"], streamed["completion_tokens"]) == (2, 4)
    assert "request_body" not in first  # bodies only with capture_bodies

    actions = [
        (r["action"], r["target"], r["status"], r["who"], r["client"])
        for r in records
        if r["kind"] == "admin"
    ]
    assert actions == [
        ("key.create", "team-c", 201, "admin_key", "127.0.0.1"),
        ("key.disable", "team-c", 200, "admin_key", "127.0.0.1"),
        ("key.enable", "team-c", 200, "admin_key", "127.0.0.1"),
        ("key.delete", "team-c", 200, "admin_key", "127.0.0.1"),
        ("model.load", "m", 503, "admin_key", "127.0.0.1"),
    ]

    # `orchestra audit query` and `tail`, reading the same files.
    query = _cli("query", "--path", str(trail), "--key", "team-a", "--since", "1h", "-o", "json")
    assert [r["request_id"] for r in query] == [
        k for k, r in requests.items() if r["key"] == "team-a"
    ]
    errors = _cli("query", "--path", str(trail), "--status", "4xx", "-o", "json")
    assert [r["status"] for r in errors] == [404, 401]
    tail = _cli("tail", "--path", str(trail), "-n", "2", "-o", "json")
    assert [r.get("action") or r["path"] for r in tail] == ["model.load", "/v1/models"]
    table = subprocess.run(
        [sys.executable, "-m", "orchestra.cli", "audit", "query", "--path", str(trail)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert "team-a" in table and "key.create" in table


def test_batch_rows_and_captured_bodies(engine: FakeEngineProcess, tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"
    audit = {"capture_bodies": True, "max_body_bytes": 40}
    batch = {"dir": str(tmp_path / "batch"), "poll_s": 0.05, "row_backoff_s": 0.05}
    with gateway(engine, trail, audit, batch=batch) as gw:
        body = {"model": "m", "prompt": "one two three", "max_tokens": 2}
        reply = _post(gw.url + "/v1/completions", KEY_A, body)
        assert reply.status_code == 200
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY_B, max_retries=0)
        rows = [chat_line(i, model="m") for i in range(3)]
        done = wait_status(client, submit(client, jsonl(rows)).id)
        assert done.status == "completed"
    every = lines(trail)  # all written at the stop, if not before
    records = [r for r in every if r["kind"] == "batch_row"]
    assert len(records) == 3
    first = next(r for r in every if r["request_id"] == reply.headers["x-request-id"])
    assert first["request_body"] == reply.request.content[:40].decode()  # cut as configured
    assert first["reply_body"] == reply.text[:40]
    assert {(r["key"], r["model"], r["status"], r["path"]) for r in records} == {
        ("team-b", "m", 200, "/v1/chat/completions")
    }
    assert all(r["request_id"].startswith(done.id) for r in records)
    assert all(r["completion_tokens"] == 3 and r["request_body"] for r in records)
    # The Files and Batches API's own calls are requests of team-b's too.
    paths = {r["path"] for r in every if r["kind"] == "request" and r["key"] == "team-b"}
    assert {"/v1/files", "/v1/batches"} <= paths


@contextlib.contextmanager
def _tail_follow(trail: Path, *args: str) -> Iterator[queue.Queue[bytes]]:
    """`orchestra audit tail -f` running; its printed lines, as they come, in a queue."""
    argv = [sys.executable, "-m", "orchestra.cli", "audit", "tail", "-f", "--path", str(trail)]
    proc = spawn([*argv, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE)
    printed: queue.Queue[bytes] = queue.Queue()
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: [printed.put(line) for line in proc.stdout or ()])
    reader.start()
    try:
        yield printed
    finally:
        stop_group(proc, 10.0)
        reader.join(timeout=10)


def _next(printed: queue.Queue[bytes], count: int) -> list[dict[str, object]]:
    """The next `count` JSON lines printed (the command's start imports a lot: a long bound)."""
    return [json.loads(printed.get(timeout=60)) for _ in range(count)]


def _cli(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "orchestra.cli", "audit", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
