"""The fault matrix: each upstream fault, what the client sees, and that the replica recovers.

Before the first byte a fault means failover to the healthy replica (model `pair`) or, with none
left (model `solo`), an OpenAI-shaped error; after it, the stream ends with one
`data: {"error": ...}` event. Nothing hangs (every request is bounded), the failed replica is
marked down and comes back, and no upstream connection is left open.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import orjson
import pytest

from tests.conftest import wait_until
from tests.faults.conftest import FIRST_BYTE_S, IDLE_READ_S, KEEPALIVE_S, Rig, restart

pytestmark = pytest.mark.timeout(60)


def events(text: str) -> list[Any]:
    """The SSE data payloads of a stream body, parsed (every one must be JSON or [DONE])."""
    out: list[Any] = []
    for event in text.split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data:"):
                payload = line[5:].strip()
                out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def assert_openai_error(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert {"message", "type", "code"} <= set(error)
    return dict(error)


def assert_cut_stream(text: str) -> dict[str, Any]:
    """Some chunks, then exactly one final error event, no [DONE]."""
    parsed = events(text)
    assert "[DONE]" not in parsed
    assert len(parsed) >= 2 and "choices" in parsed[0]
    error = assert_openai_error(parsed[-1])
    assert error["code"] == "stream_interrupted"
    assert all("error" not in e for e in parsed[:-1])
    return error


def marked_down(rig: Rig, engine_url: str, reason: str) -> bool:
    return f"upstream {engine_url} for " in rig.gateway.output() and reason in rig.gateway.output()


def assert_recovers(rig: Rig, model: str, engine_attr: str) -> None:
    engine = getattr(rig, engine_attr)
    engine.set_fault("none")
    wait_until(lambda: rig.healthy(model, engine), timeout=10, what=f"{engine.url} back")
    engine._call("/fake/reset", {})
    for _ in range(6):
        assert rig.chat(model).status_code == 200
    assert engine.stats()["completed"] > 0, "the recovered replica takes requests again"


def test_connection_refused_fails_over(fresh: Rig) -> None:
    rig = fresh
    rig.a.stop()
    for i in range(4):
        reply = rig.chat("pair", stream=bool(i % 2))
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-orchestra-backend"] == "vllm"
    assert rig.down("pair", rig.a)
    assert marked_down(rig, rig.a.url, "connect")
    rig.a = restart(rig.a)
    assert_recovers(rig, "pair", "a")


def test_500_is_an_openai_error_and_repeated_500s_mark_down(fresh: Rig) -> None:
    rig = fresh
    rig.c.set_fault("500")
    for _ in range(2):  # one request's 500 must not take a whole model offline
        reply = rig.chat("solo")
        assert reply.status_code == 500  # the engine's own error, passed through unchanged
        assert_openai_error(reply.json())
        assert not rig.down("solo", rig.c)
    assert rig.chat("solo").status_code == 500  # the third in a row (errors_to_mark_down)
    # Read from the log, not the health gauge: the replica still answers /health, so with a
    # 0.2 s cool-down a probe may already have put it back by the time a gauge is read.
    wait_until(lambda: marked_down(rig, rig.c.url, "HTTP 500"), timeout=5, what="marked down")
    again = rig.chat("solo")  # down (503, Retry-After) or probed back and failing again (500)
    assert again.status_code in (500, 503)
    assert_openai_error(again.json())
    assert_recovers(rig, "solo", "c")


def test_a_success_between_500s_keeps_the_replica_in(fresh: Rig) -> None:
    rig = fresh
    for _ in range(2):
        rig.c.set_fault("500", count=2)
        assert [rig.chat("solo").status_code for _ in range(3)] == [500, 500, 200]
    assert not rig.down("solo", rig.c)


def test_503_retry_after_fails_over_and_is_respected(fresh: Rig) -> None:
    rig = fresh
    rig.a.set_fault("503")  # with Retry-After: 1
    started = time.monotonic()
    for _ in range(4):
        reply = rig.chat("pair")
        assert reply.status_code == 200, reply.text
    assert rig.down("pair", rig.a)
    rig.a.set_fault("none")
    wait_until(lambda: rig.healthy("pair", rig.a), timeout=10, what="A back")
    assert time.monotonic() - started >= 0.9, "down for at least the upstream's Retry-After"
    rig.c.set_fault("503")
    reply = rig.chat("solo")
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    assert_openai_error(reply.json())
    assert_recovers(rig, "solo", "c")


def test_slow_headers_past_first_byte_timeout(fresh: Rig) -> None:
    rig = fresh
    rig.a.set_fault("slow-headers", delay=3 * FIRST_BYTE_S)
    rig.c.set_fault("slow-headers", delay=3 * FIRST_BYTE_S)
    for _ in range(2):
        started = time.monotonic()
        reply = rig.chat("pair")
        assert reply.status_code == 200, reply.text
        assert time.monotonic() - started < FIRST_BYTE_S + 1.5
    assert marked_down(rig, rig.a.url, "first byte timeout")
    started = time.monotonic()
    reply = rig.chat("solo", stream=True)
    assert reply.status_code == 504
    assert assert_openai_error(reply.json())["code"] == "upstream_timeout"
    assert time.monotonic() - started < FIRST_BYTE_S + 1.5
    assert_recovers(rig, "pair", "a")
    assert_recovers(rig, "solo", "c")


def test_hang_mid_stream(fresh: Rig) -> None:
    rig = fresh
    rig.c.set_fault("hang-mid-stream")
    started = time.monotonic()
    reply = rig.chat("solo", stream=True)
    assert reply.status_code == 200
    assert "nothing for" in assert_cut_stream(reply.text)["message"]
    assert time.monotonic() - started < IDLE_READ_S + 1.5
    assert marked_down(rig, rig.c.url, "idle read timeout")
    rig.a.set_fault("hang-mid-stream")  # non-stream: half a body, then silence
    for _ in range(2):
        assert rig.chat("pair").status_code == 200
    assert_recovers(rig, "solo", "c")
    assert_recovers(rig, "pair", "a")


def test_upstream_killed_mid_stream(fresh: Rig) -> None:
    rig = fresh
    rig.c._call("/fake/config", {"token_rate": 20})
    started = time.monotonic()
    body = {"model": "solo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 50}
    text = ""
    with rig.client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for chunk in r.iter_text():
            text += chunk
            if text.count("data:") == 3 and rig.c.proc is not None and rig.c.proc.poll() is None:
                os.killpg(rig.c.proc.pid, signal.SIGKILL)
    assert "connection lost" in assert_cut_stream(text)["message"]
    assert time.monotonic() - started < 5
    assert marked_down(rig, rig.c.url, "lost mid-stream")
    # Gone, not dying: a process killed on a saturated machine may close its listening socket
    # after the stream's (an exit closes descriptors in order); a connect accepted in between
    # is reset, which is the engine failing mid-request (502), not the engine being absent.
    assert rig.c.proc is not None
    rig.c.proc.wait(timeout=30)
    reply = rig.chat("solo")
    assert reply.status_code == 503, reply.text  # nothing left to serve
    assert assert_openai_error(reply.json())["code"] == "no_upstream_available"
    rig.c = restart(rig.c)
    assert_recovers(rig, "solo", "c")


def test_malformed_json_and_sse(fresh: Rig) -> None:
    rig = fresh
    rig.c.set_fault("malformed")
    reply = rig.chat("solo")  # a 200 whose JSON body is cut in half
    assert reply.status_code == 502
    assert "malformed" in assert_openai_error(reply.json())["message"]
    rig.c.set_fault("none")
    wait_until(lambda: rig.healthy("solo", rig.c), timeout=10, what="C back")
    rig.c.set_fault("malformed")
    reply = rig.chat("solo", stream=True)  # one broken event in the middle
    assert reply.status_code == 200
    assert "malformed" in assert_cut_stream(reply.text)["message"]  # every event parses
    rig.a.set_fault("malformed")
    for _ in range(2):
        assert rig.chat("pair").status_code == 200  # fails over before the first byte
    assert_recovers(rig, "solo", "c")
    assert_recovers(rig, "pair", "a")


def test_closed_without_done(fresh: Rig) -> None:
    rig = fresh
    rig.c.set_fault("no-done")
    reply = rig.chat("solo", stream=True)
    assert reply.status_code == 200
    assert "[DONE]" in assert_cut_stream(reply.text)["message"]
    assert_recovers(rig, "solo", "c")


def test_cut_mid_stream(fresh: Rig) -> None:
    rig = fresh
    rig.c.set_fault("cut-mid-stream")
    reply = rig.chat("solo", stream=True)
    assert reply.status_code == 200
    assert_cut_stream(reply.text)
    assert_recovers(rig, "solo", "c")


def test_no_leaked_upstream_connections(fresh: Rig) -> None:
    """Runs last: after the matrix every upstream socket is closed or idle-expired."""
    rig = fresh
    wait_until(
        lambda: rig.engine_connections() == 0,
        timeout=KEEPALIVE_S + 5,
        what="gateway's upstream connections closed",
    )
    for engine in (rig.a, rig.b, rig.c):
        assert engine.stats()["active"] == 0
