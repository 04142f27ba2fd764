"""The operator's views on the real CPU engine (runs after test_real_engine.py): a streamed
request that waits for a real engine start gets loading comments then the answer, while
`/v1/models`, the console's feed and `orchestra status` (80 columns) show the load. That load
is the stack's on-demand swap (max_resident 1: a request for the other name stops the resident
engine and starts its own, and succeeds), checked here rather than with an engine start of its
own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT, wait_until
from tests.e2e.conftest import COLD, HOT, START_TIMEOUT_S, Stack, record_figure

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
QUESTION = "What is the capital of France?"


def _stream(stack: Stack, model: str, out: dict[str, Any]) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
    }
    url = stack.gateway.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=START_TIMEOUT_S) as reply:
        out["status"] = reply.status_code
        out["text"] = reply.read().decode()


def test_loading_comments_console_and_status_during_a_real_load(stack: Stack) -> None:
    # The swaps before leave either name resident: the request below asks for the other.
    resident, other = (HOT, COLD) if stack.model(HOT)["state"] == "ready" else (COLD, HOT)
    if stack.model(other)["state"] != "cold":
        stack.control(other, "unload")
    assert stack.model(resident)["state"] == "ready"  # so the request below swaps
    out: dict[str, Any] = {}
    worker = threading.Thread(target=_stream, args=(stack, other, out))
    started = time.monotonic()
    worker.start()
    gw = stack.gateway.url

    def starting() -> dict[str, Any] | None:
        models = {m["id"]: m for m in httpx.get(gw + "/v1/models", timeout=10).json()["data"]}
        return models[other] if models[other]["state"] == "starting" else None

    listed = wait_until(starting, timeout=60, interval=0.2, what=f"{other} starting")
    assert listed["loading"]["elapsed_s"] is not None
    snap = httpx.get(gw + "/console/api/snapshot", timeout=10).json()  # loopback: no key needed
    assert any(s["model"] == other for s in snap["swaps"]), snap["swaps"]
    env = {**os.environ, "COLUMNS": "80"}
    status = subprocess.run(
        [sys.executable, "-m", "orchestra.cli", "status", "--config", str(stack.supervisor.path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    lines = status.stdout.rstrip("\n").splitlines()
    assert status.returncode == 0 and max(map(len, lines)) <= 80, status.stdout
    assert any(line.split()[:2] == [other, "starting"] for line in lines), lines
    worker.join(START_TIMEOUT_S)
    first_swap_s = time.monotonic() - started

    assert out["status"] == 200
    events = out["text"].split("\n\n")
    comments = [e for e in events if e.startswith(": loading")]
    assert comments[0] == f": loading {other}, 0 s" and len(comments) >= 2
    data = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    answer = "".join(c["choices"][0]["delta"].get("content") or "" for c in data if c["choices"])
    assert "paris" in answer.lower() and events[-2] == "data: [DONE]"
    record_figure("e2e_loading_comments_during_cold_start", len(comments))
    snap = httpx.get(gw + "/console/api/snapshot", timeout=10).json()
    states = {m["name"]: m["state"] for m in snap["models"]}
    assert states[other] == "ready" and states[resident] != "ready"  # one resident at a time
    # The on-demand swap: resident stopped, other started, the request waited and succeeded.
    assert stack.model(other)["state"] == "ready" and stack.model(resident)["state"] == "cold"
    record_figure("e2e_on_demand_swap_first_request_s", round(first_swap_s, 1))
    assert stack.gateway.metric("orchestra_requests_total", model=other, status="200") >= 1
    asked = stack.client.chat.completions.create(
        model=other, messages=[{"role": "user", "content": QUESTION}], max_tokens=30, temperature=0
    )
    assert "paris" in (asked.choices[0].message.content or "").lower()
