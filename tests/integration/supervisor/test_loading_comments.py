"""A visible swap: a streamed request that waits for its model to load gets `: loading MODEL,
N s` SSE comments, then the answer; a failed load ends the stream with an error event;
non-streamed requests and models with the option off are unchanged; `/v1/models` shows a
loading model's state and time left. Real supervisor, fake engines, real gateway."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess, wait_until
from tests.fake_engine import free_port

from .helpers import SupervisorProcess, config_dict, server

pytestmark = pytest.mark.slow

CHAT = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}


def _config(tmp: Path) -> dict[str, Any]:
    config = config_dict(
        tmp,
        [],
        pool=[
            server("slow", tmp, "--startup-delay", "2"),
            server("quiet", tmp, "--startup-delay", "1", loading_comments=False),
            server("broken", tmp, "--fail-start"),
        ],
        engine={"max_restarts": 0},
    )
    config["gateway"] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "routing_refresh_s": 0.2,
        "drain_timeout_s": 1,
        "timeouts": {"ensure_s": 30},
        "loading_comments": True,
        "loading_comment_interval_s": 0.5,
    }
    return config


def _stream(gateway: GatewayProcess, model: str) -> tuple[int, str]:
    body = {**CHAT, "model": model, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=60) as reply:
        return reply.status_code, reply.read().decode()


def _models(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    data = httpx.get(gateway.url + "/v1/models", timeout=10).json()["data"]
    return {m["id"]: m for m in data}


def test_loading_comments(tmp_path: Path) -> None:
    config = _config(tmp_path)
    supervisor = SupervisorProcess(config, tmp_path).start()
    try:
        with GatewayProcess(config) as gateway:
            # While `slow` loads, /v1/models says so (its first start: no expectation yet).
            seen: list[dict[str, Any]] = []
            result: dict[str, Any] = {}
            worker = threading.Thread(target=lambda: result.update(r=_stream(gateway, "slow")))
            worker.start()
            wait_until(lambda: _models(gateway)["slow"]["state"] == "starting", 15, what="start")
            seen.append(_models(gateway)["slow"])
            worker.join(60)
            status, text = result["r"]
            assert status == 200
            events = text.split("\n\n")
            comments = [e for e in events if e.startswith(":")]
            assert comments[0] == ": loading slow, 0 s"
            assert len(comments) >= 3  # 2 s of loading, one every 0.5 s
            data = [e for e in events if e.startswith("data:")]
            assert data[-1] == "data: [DONE]"
            chunks = [json.loads(e[5:]) for e in data[:-1]]
            answer = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
            assert answer == "The capital of France is Paris."
            assert text.index(comments[-1]) < text.index(data[0])  # comments only before
            loading = seen[0]["loading"]
            assert loading["elapsed_s"] is not None and loading["expected_s"] is None

            # Second start: the last start time gives the time left.
            assert httpx.post(f"{supervisor.url}/models/slow/unload", timeout=30).is_success
            wait_until(lambda: _models(gateway)["slow"]["state"] == "cold", 10, what="cold")
            # Cold now, with one start measured: the cost model expects a request to wait that.
            assert _models(gateway)["slow"]["expected_s"] >= 2
            worker = threading.Thread(target=lambda: result.update(r=_stream(gateway, "slow")))
            worker.start()
            wait_until(lambda: _models(gateway)["slow"]["state"] == "starting", 15, what="start")
            loading = _models(gateway)["slow"]["loading"]
            worker.join(60)
            assert loading["expected_s"] >= 2  # the fake binds its port after 2 s
            expected_left = max(loading["expected_s"] - loading["elapsed_s"], 0)
            assert abs(loading["remaining_s"] - expected_left) <= 0.1
            assert result["r"][0] == 200 and "data: [DONE]" in result["r"][1]

            # OpenAI's SDK reads through the comments.
            assert httpx.post(f"{supervisor.url}/models/slow/unload", timeout=30).is_success
            wait_until(lambda: _models(gateway)["slow"]["state"] == "cold", 10, what="cold")
            client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="none", max_retries=0)
            stream = client.chat.completions.create(
                model="slow", messages=CHAT["messages"], stream=True
            )
            parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
            assert "".join(parts) == "The capital of France is Paris."

            # A load that fails: the 200 is already sent, so the stream ends with an error.
            status, text = _stream(gateway, "broken")
            assert status == 200 and text.startswith(": loading broken, 0 s")
            last = text.rstrip("\n").split("\n\n")[-1]
            assert last.startswith("data: ")
            error = json.loads(last[6:])["error"]
            assert "broken" in error["message"] and error["type"]
            assert "[DONE]" not in text
            # The client saw a 200; the failure counts as a stream cut after it.
            assert gateway.metric("orchestra_stream_errors_total", model="broken") == 1
            assert gateway.metric("orchestra_requests_total", model="broken", status="200") == 1

            # Option off for `quiet`: no comments, the answer as before.
            status, text = _stream(gateway, "quiet")
            assert status == 200 and text.startswith("data: ") and ": loading" not in text

            # Non-streamed requests never get comments.
            assert httpx.post(f"{supervisor.url}/models/slow/unload", timeout=30).is_success
            wait_until(lambda: _models(gateway)["slow"]["state"] == "cold", 10, what="cold")
            reply = httpx.post(
                gateway.url + "/v1/chat/completions", json={**CHAT, "model": "slow"}, timeout=60
            )
            assert reply.status_code == 200 and reply.headers["content-type"].startswith(
                "application/json"
            )
            assert reply.json()["choices"][0]["message"]["content"].endswith("Paris.")
    finally:
        supervisor.stop()
