"""The console without a supervisor (unmanaged upstreams only) and without an admin key:
loopback clients get it, the table comes from the gateway's routes, the SSE feed streams,
actions answer 503 (nothing manages the models), and `console.enabled: false` removes it."""

from __future__ import annotations

import json

import httpx

from tests.conftest import GatewayProcess, fast_gateway_section, free_port
from tests.fake_engine import FakeEngineProcess


def test_console_for_unmanaged_upstreams() -> None:
    with FakeEngineProcess(name="up") as engine:
        config = {
            "servers": [{"name": "up", "url": engine.url}],
            "gateway": fast_gateway_section(free_port(), console={"refresh_s": 0.1}),
        }
        with GatewayProcess(config) as gateway:
            page = httpx.get(gateway.url + "/console", timeout=10)
            assert page.status_code == 200 and 'data-model="up"' in page.text
            assert "unmanaged" in page.text
            chat = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(gateway.url + "/v1/chat/completions", json=chat).is_success

            updates = []
            with httpx.stream("GET", gateway.url + "/console/events", timeout=10) as feed:
                assert feed.headers["content-type"].startswith("text/event-stream")
                for line in feed.iter_lines():
                    if line.startswith("data: "):
                        updates.append(json.loads(line[6:]))
                    if len(updates) == 3:
                        break
            assert updates[-1]["models"] == [{"name": "up", "state": "ready", "hot": False}]
            assert updates[-1]["notice"] == ""

            act = httpx.post(gateway.url + "/console/api/models/up/load", timeout=10)
            assert act.status_code == 503 and act.json()["error"]["message"]
            bad = httpx.post(gateway.url + "/console/api/models/up/explode", timeout=10)
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "action"
            missing = httpx.post(gateway.url + "/console/api/models/nope/load", timeout=10)
            assert missing.status_code == 404
            assert httpx.get(gateway.url + "/console/static/../app.py").status_code == 404
            js = httpx.get(gateway.url + "/console/static/console.js")
            assert js.status_code == 200 and "EventSource" in js.text

        config["gateway"] = fast_gateway_section(free_port(), console={"enabled": False})
        with GatewayProcess(config) as gateway:
            assert httpx.get(gateway.url + "/console", timeout=10).status_code == 404
