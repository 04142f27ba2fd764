"""The console's charts through a real gateway and a fake engine: answers (200, 500, 429),
first bytes and completion tokens show in `GET /console/api/series` per interval, and the
model's state changes (its engine gone, then back) are markers."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import GatewayProcess, fast_gateway_section, free_port, wait_until
from tests.fake_engine import FakeEngineProcess

STEP_S = 1.0


def _chat(url: str, stream: bool) -> int:
    body: dict[str, Any] = {
        "model": "up",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    return reply.status_code


def _series(url: str) -> dict[str, Any]:
    reply = httpx.get(url + "/console/api/series", timeout=10)
    assert reply.status_code == 200 and reply.headers["cache-control"] == "no-store"
    return dict(reply.json())


def _done(cols: dict[str, list[float | None]], key: str) -> float:
    """What the finished intervals counted (rates x step; the current one is still open)."""
    return sum(v or 0.0 for v in cols[key][:-1]) * STEP_S


def test_series_counts_answers_first_bytes_tokens_and_markers() -> None:
    with FakeEngineProcess("--ttft-ms", "40", name="up") as engine:
        config = {
            "servers": [{"name": "up", "url": engine.url}],
            "gateway": fast_gateway_section(
                free_port(),
                console={"refresh_s": 0.2, "chart_step_s": STEP_S, "chart_window_s": 120},
                errors_to_mark_down=100,  # the 500s below must not take the replica out
            ),
        }
        with GatewayProcess(config) as gateway:
            gateway.wait_ready("up")
            statuses = [_chat(gateway.url, stream=i % 2 == 0) for i in range(6)]
            engine.set_fault("500", count=2)
            statuses += [_chat(gateway.url, stream=False) for _ in range(2)]
            engine.set_fault("429", count=1)
            statuses.append(_chat(gateway.url, stream=False))
            assert statuses.count(200) == 6, statuses
            assert statuses.count(429) == 1, statuses
            errors = sum(1 for s in statuses if s >= 500)
            assert errors == 2, statuses

            def settled() -> dict[str, Any] | None:
                snap = _series(gateway.url)
                cols = snap["models"].get("up")
                if cols is None or _done(cols, "requests_per_s") < len(statuses):
                    return None
                return snap

            snap = wait_until(settled, timeout=20, interval=0.2, what="the answers in the ring")
            assert snap["step_s"] == STEP_S and len(snap["models"]["up"]["requests_per_s"]) == 120
            cols = snap["models"]["up"]
            assert _done(cols, "requests_per_s") == len(statuses)
            assert _done(cols, "errors_per_s") == errors
            assert _done(cols, "limited_per_s") == 1
            # the fake engine answers 5 completion tokens to each successful call
            assert _done(cols, "tokens_per_s") == 6 * 5
            p50 = [v for v in cols["ttft_p50_s"] if v is not None]
            p95 = [v for v in cols["ttft_p95_s"] if v is not None]
            # the successes' first bytes (the engine waits 40 ms) in p95; the errors' are quick
            assert p50 and p95 and all(v < 5 for v in p50 + p95), cols["ttft_p50_s"]
            assert max(p95) > 0.03, cols["ttft_p95_s"]
            assert snap["markers"] == []  # no state change yet

            # The engine goes away (a request finds it gone: the route is down), then a new one
            # answers on its port (the health probe puts it back: ready).
            engine.stop()

            def marked(state: str) -> bool:
                return any(m["state"] == state for m in _series(gateway.url)["markers"])

            assert _chat(gateway.url, stream=False) >= 500
            wait_until(lambda: marked("down"), timeout=20, interval=0.2, what="a down marker")
            with FakeEngineProcess("--ttft-ms", "40", name="up", port=engine.port):
                wait_until(lambda: marked("ready"), timeout=20, interval=0.2, what="ready marker")
            markers = _series(gateway.url)["markers"]
            assert [(m["model"], m["was"], m["state"]) for m in markers][:2] == [
                ("up", "ready", "down"),
                ("up", "down", "ready"),
            ]
            assert snap["t0"] <= markers[0]["t"] <= markers[1]["t"]
