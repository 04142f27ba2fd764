"""A gateway stopping (SIGTERM) answers what it cannot finish with an OpenAI-shaped 503 and
`Retry-After`, never uvicorn's plain-text `Internal Server Error`, and exits within its drain
timeout."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(90)


def test_a_request_in_flight_at_the_drain_deadline_gets_a_json_503() -> None:
    with FakeEngineProcess(name="m") as engine:
        engine._call("/fake/config", {"ttft_ms": 20000})  # answers long after the deadline
        section = fast_gateway_section(free_port(), drain_timeout_s=1)
        config = {"gateway": section, "servers": [{"name": "m", "url": engine.url}]}
        with GatewayProcess(config) as gw:
            replies: list[httpx.Response] = []
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

            def send() -> None:
                replies.append(httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30))

            client = threading.Thread(target=send)
            client.start()
            wait_until(lambda: engine.stats()["active"] == 1, what="the request at the engine")
            assert gw.proc is not None
            stopped = time.monotonic()
            os.killpg(gw.proc.pid, signal.SIGTERM)
            client.join(30)
            assert gw.proc.wait(30) is not None
            took = time.monotonic() - stopped
        assert len(replies) == 1
        reply = replies[0]
        assert reply.status_code == 503, reply.text
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.headers["retry-after"] == "1"
        assert reply.json()["error"]["code"] == "shutting_down"
        assert took < 1 + 10  # the drain timeout, and the process's own exit
