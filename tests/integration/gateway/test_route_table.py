"""The route table is the one list of paths, and its policy holds on every one of them.

Derived from `gateway/edge/routes.ROUTES` and the app's own routes, so a new path cannot escape:
every route the app serves has an entry; with `gateway.api_keys` set, every model call is
refused without a key and with a wrong one (401, the engine never reached) and served with a
good one (and its reply names the engine in `x-orchestra-replica`); every admin route refuses
a request without the admin key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from orchestra.config import OrchestraConfig
from orchestra.gateway.app import create_app
from orchestra.gateway.edge.routes import ROUTES, Caller
from orchestra.gateway.protection.keys import hash_key
from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(120)

MODEL_CALLS = sorted(spec.path for spec in ROUTES if spec.model_call)
GOOD, ADMIN = "sk-good", "sk-admin"


def _fastapi(app: Any) -> FastAPI:
    while not isinstance(app, FastAPI):
        app = app.app  # the ASGI layers in front of it
    return app


def test_every_app_route_has_an_entry_and_every_entry_is_served() -> None:
    config = OrchestraConfig.model_validate({"servers": [{"name": "m", "url": "http://x:1"}]})
    asgi = create_app(config)
    declared = {(spec.path, m) for spec in ROUTES if spec.endpoint for m in spec.methods}
    served: set[tuple[str, str]] = set()
    for route in _fastapi(asgi).routes:
        assert isinstance(route, APIRoute), f"{route!r} is not from the route table"
        for method in route.methods:
            assert (route.path, method) in declared, f"{method} {route.path} has no entry"
            served.add((route.path, method))
    assert served == declared  # console enabled by default: everything is installed
    # the model calls are the edge's, each with its shaper; whatever reaches a model
    # needs an API key
    for spec in ROUTES:
        if spec.model_call:
            assert spec.caller is Caller.API_KEY
            assert spec.reaches_model
        if spec.reaches_model:
            assert spec.caller is Caller.API_KEY


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess(name="m") as one:
        yield one


@pytest.fixture(scope="module")
def gateway(engine: FakeEngineProcess) -> Iterator[GatewayProcess]:
    section = fast_gateway_section(free_port())
    section["api_keys"] = [{"name": "good", "sha256": hash_key(GOOD)}]
    section["admin_key_sha256"] = hash_key(ADMIN)
    config = {"gateway": section, "servers": [{"name": "m", "url": engine.url}]}
    with GatewayProcess(config) as gw:
        yield gw


def _send(gateway: GatewayProcess, path: str, key: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    spec = next(s for s in ROUTES if s.path == path)
    if spec.body == "multipart":
        return httpx.post(
            gateway.url + path,
            data={"model": "m"},
            files={"file": ("a.wav", b"RIFF0000WAVE")},
            headers=headers,
            timeout=10,
        )
    body: dict[str, Any] = {"model": "m", "prompt": "hi", "input": "hi", "query": "q"}
    body |= {"messages": [{"role": "user", "content": "hi"}], "documents": ["a"]}
    body |= {"max_tokens": 4}
    return httpx.post(gateway.url + path, json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("path", MODEL_CALLS)
def test_a_model_call_needs_a_good_key(
    path: str, gateway: GatewayProcess, engine: FakeEngineProcess
) -> None:
    reset_engine(engine)
    for key in (None, "sk-wrong"):
        reply = _send(gateway, path, key)
        assert reply.status_code == 401, (key, reply.text)
        assert reply.json()["error"]["type"] == "authentication_error"  # OpenAI's or Anthropic's
    assert engine.stats()["records"] == []  # refused at the edge: the engine never saw it
    reply = _send(gateway, path, GOOD)
    assert reply.status_code != 401, reply.text
    assert [r["path"] for r in engine.stats()["records"]] == [path]
    # the gateway's own key is not the engine's business
    assert reply.headers.get("x-orchestra-served-by") == "m"
    # every proxied reply names the engine that served it: node and port
    assert reply.headers.get("x-orchestra-replica") == engine.url.removeprefix("http://")


@pytest.mark.parametrize(
    "spec",
    [s for s in ROUTES if s.caller is not Caller.OPEN and not s.model_call],
    ids=lambda s: f"{'|'.join(sorted(s.methods))} {s.path}",
)
def test_every_guarded_route_refuses_a_request_without_its_key(
    spec: Any, gateway: GatewayProcess
) -> None:
    path = re.sub(r"\{[^}]+\}", "x", spec.path)  # any value: refused before routing
    for method in spec.methods:
        reply = httpx.request(method, gateway.url + path, timeout=10)
        assert reply.status_code == 401, (method, path, reply.text)
        assert "error" in reply.json()


def test_open_routes_stay_open(gateway: GatewayProcess) -> None:
    for spec in ROUTES:
        if spec.caller is Caller.OPEN:
            assert httpx.get(gateway.url + spec.path, timeout=10).status_code == 200
