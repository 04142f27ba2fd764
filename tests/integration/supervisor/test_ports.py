"""An engine is the one we started (issue 31, part 1).

Another server on an engine's port (a second stack, a vLLM started by hand) that answers
`/health` 200 must never make a model READY, nor get a request: engines take a free port from
the range right before each launch, READY needs the listening socket to belong to the engine's
process group, a configured `port:` already taken is a failed start naming it, and a restarted
supervisor does not adopt a record whose port someone else holds.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess, wait_until
from tests.fake_engine import free_port

from .helpers import SupervisorProcess, config_dict, group_members, server, wait_groups_empty

pytestmark = pytest.mark.slow


class Foreign:
    """A server Orchestra did not start: `/health` 200, and a count of every other request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                if self.path != "/health":
                    hits.append(self.path)
                body = b"{}" if self.path == "/health" else b'{"foreign": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@contextmanager
def foreign(port: int) -> Iterator[Foreign]:
    f = Foreign(port)
    f.thread.start()
    try:
        yield f
    finally:
        f.server.shutdown()
        f.server.server_close()
        f.thread.join(5)


def _ranged(name: str, tmp: Path, *args: str) -> dict[str, Any]:
    """A model with no `port:`: its engine's port comes from the range."""
    entry = server(name, tmp, *args)
    del entry["port"]
    return entry


def _engine(sup: SupervisorProcess, name: str) -> dict[str, Any]:
    return dict(sup.models()[name]["engines"][0])


def _ready(sup: SupervisorProcess, name: str, timeout: float = 30) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        engine = _engine(sup, name)
        return engine if engine["state"] == "ready" else None

    return dict(wait_until(ready, timeout, what=f"{name} ready"))


def _chat(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def test_foreign_health_on_the_first_port_never_serves_the_model(tmp_path: Path) -> None:
    first = free_port()
    config = config_dict(tmp_path, [_ranged("a", tmp_path)], engine={"first_port": first})
    config["gateway"] = {"port": free_port(), "timeouts": {"ensure_s": 30}}
    with foreign(first) as other:
        sup = SupervisorProcess(config, tmp_path).start()
        try:
            engine = _ready(sup, "a")
            assert engine["port"] != first and engine["url"].endswith(f":{engine['port']}")
            with GatewayProcess(config) as gateway:
                gateway.wait_ready("a", timeout=30)
                for _ in range(20):
                    reply = _chat(gateway.url, "a")
                    assert reply.status_code == 200, reply.text
                    assert reply.json()["model"] == "a" and "foreign" not in reply.json()
            assert other.hits == []
        finally:
            sup.stop()


def test_configured_port_held_by_a_foreign_server_is_a_failed_start(tmp_path: Path) -> None:
    port = free_port()
    entry = server("a", tmp_path, port=port)
    config = config_dict(tmp_path, [entry], engine={"max_restarts": 0})
    with foreign(port) as other:
        sup = SupervisorProcess(config, tmp_path).start()
        try:
            wait_until(lambda: sup.models()["a"]["state"] == "failed", 20, what="a failed")
            error = _engine(sup, "a")["last_error"] or ""
            assert f"port {port} (servers[0].port) is already in use" in error, error
            assert other.hits == []
        finally:
            sup.stop()


def test_engine_that_loses_its_port_to_a_foreign_server_is_a_failed_start(tmp_path: Path) -> None:
    """The port was free when picked, then a foreign server took it before the engine bound
    (it waits 2 s before binding): its /health answers 200 but READY waits for our engine,
    which exits (cannot bind): a failed start with the log's line; the retry takes another
    port and serves."""
    first = free_port()
    entry = _ranged("a", tmp_path, "--startup-delay", "2")
    config = config_dict(tmp_path, [entry], engine={"first_port": first})
    sup = SupervisorProcess(config, tmp_path).start()
    try:
        wait_until(lambda: _engine(sup, "a")["state"] == "starting", 10, what="a starting")
        with foreign(first) as other:
            seen: list[tuple[str, int]] = []

            def ready() -> bool:
                engine = _engine(sup, "a")
                seen.append((engine["state"], engine["port"]))
                return bool(engine["state"] == "ready")

            wait_until(ready, 30, what="a ready after a retry")
            engine = _engine(sup, "a")
            assert engine["port"] != first and engine["restarts"] == 1, engine
            error = engine["last_error"] or ""
            assert "during startup" in error and "address already in use" in error, error
            assert f"port {first} is held by pid" in error, error
            assert ("ready", first) not in seen
            assert _chat(engine["url"], "a").json()["model"] == "a"
            assert other.hits == []
    finally:
        sup.stop()


def test_two_supervisors_with_overlapping_ranges_serve_their_own_models(tmp_path: Path) -> None:
    first = free_port()
    sups = []
    try:
        for name in ("a", "b"):
            tmp = tmp_path / name
            tmp.mkdir()
            config = config_dict(tmp, [_ranged(name, tmp)], engine={"first_port": first})
            sups.append(SupervisorProcess(config, tmp).start())  # engines start at once
        engines = {name: _ready(sup, name) for name, sup in zip("ab", sups, strict=True)}
        assert engines["a"]["port"] != engines["b"]["port"]
        for name, engine in engines.items():
            for _ in range(5):
                reply = _chat(engine["url"], name)
                assert reply.status_code == 200 and reply.json()["model"] == name, reply.text
    finally:
        for sup in sups:
            sup.stop()


def test_record_whose_port_is_held_by_a_foreign_process_is_not_adopted(tmp_path: Path) -> None:
    config = config_dict(tmp_path, [_ranged("a", tmp_path)], engine={"first_port": free_port()})
    sup = SupervisorProcess(config, tmp_path).start()
    sup2: SupervisorProcess | None = None
    pid = int(_ready(sup, "a")["pid"])
    try:
        sup.signal(signal.SIGKILL)  # engines keep serving for the next supervisor
        assert sup.proc is not None and sup.proc.wait(15) == -signal.SIGKILL
        assert group_members(pid)
        port = free_port()
        record = tmp_path / "run" / "engines" / f"{pid}.json"
        data = json.loads(record.read_text())
        record.write_text(json.dumps({**data, "port": port}))  # the record names a port...
        with foreign(port) as other:  # ...that a foreign server holds now
            sup2 = SupervisorProcess(config, tmp_path).start()
            assert wait_groups_empty([pid], 10.0) == []  # not adopted: killed
            assert f"port {port} is held by pid" in sup2.output()
            engine = _ready(sup2, "a")
            assert engine["pid"] != pid and engine["port"] != port
            assert _chat(engine["url"], "a").json()["model"] == "a"
            assert other.hits == []
    finally:
        sup.stop()
        if sup2 is not None:
            sup2.stop()
