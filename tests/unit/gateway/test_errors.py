"""One error hierarchy, one OpenAI-shaped body, one handler for everything."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from orchestra.gateway.core.errors import (
    BadRequest,
    GatewayError,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from orchestra.gateway.edge.error_handlers import install_error_handlers
from orchestra.protocol import error_json


@pytest.mark.parametrize(
    ("error", "status", "type_", "code"),
    [
        (BadRequest("bad"), 400, "invalid_request_error", None),
        (PayloadTooLarge("big"), 413, "invalid_request_error", "request_too_large"),
        (Unauthorized("who"), 401, "authentication_error", "invalid_api_key"),
        (ModelNotFound("nope"), 404, "invalid_request_error", "model_not_found"),
        (Overloaded("busy"), 429, "rate_limit_error", "overloaded"),
        (Unavailable("down"), 503, "service_unavailable", "no_upstream_available"),
        (UpstreamTimeout("slow"), 504, "timeout", "upstream_timeout"),
        (UpstreamError("broken"), 502, "upstream_error", "bad_gateway"),
        (GatewayError("oops"), 500, "server_error", None),
    ],
)
def test_status_type_and_code(error: GatewayError, status: int, type_: str, code: str) -> None:
    reply = error.reply()
    assert reply.status == status
    assert reply.headers["content-type"] == "application/json"
    assert isinstance(reply.body, bytes)
    body = json.loads(reply.body)
    assert body == {
        "error": {"message": error.message, "type": type_, "param": error.param, "code": code}
    }


def test_model_not_found_names_the_model_and_param() -> None:
    error = json.loads(ModelNotFound("gpt-9").body())["error"]
    assert error["message"] == "The model `gpt-9` does not exist."
    assert error["param"] == "model"


def test_code_override_is_per_instance() -> None:
    custom = Unavailable("sleeping", code="model_sleeping")
    assert json.loads(custom.body())["error"]["code"] == "model_sleeping"
    assert Unavailable.code == "no_upstream_available"
    assert json.loads(Unavailable("x").body())["error"]["code"] == "no_upstream_available"


def test_headers_are_sent() -> None:
    reply = Overloaded("busy", headers={"retry-after": "3"}).reply()
    assert reply.headers["retry-after"] == "3"


def test_error_json_is_compact_json() -> None:
    body = error_json("m", "t", 500, "p")
    assert json.loads(body) == {"error": {"message": "m", "type": "t", "param": "p", "code": 500}}


class _Item(BaseModel):
    n: int


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/missing")
    async def missing() -> None:
        raise ModelNotFound("ghost")

    @app.get("/busy")
    async def busy() -> None:
        raise Overloaded("slow down", headers={"retry-after": "2"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.post("/items")
    async def items(item: _Item) -> dict[str, int]:
        return {"n": item.n}

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_handler_maps_gateway_errors(client: TestClient) -> None:
    reply = client.get("/missing")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"
    busy = client.get("/busy")
    assert busy.status_code == 429
    assert busy.headers["retry-after"] == "2"


def test_unexpected_exception_hides_the_traceback(client: TestClient) -> None:
    reply = client.get("/boom")
    assert reply.status_code == 500
    assert reply.json() == {
        "error": {
            "message": "internal gateway error",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert "secret" not in reply.text


def test_validation_error_is_a_400_naming_the_param(client: TestClient) -> None:
    reply = client.post("/items", json={"n": "not a number"})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "n"


def test_unknown_route_and_method_are_openai_shaped(client: TestClient) -> None:
    reply = client.get("/nowhere")
    assert reply.status_code == 404
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert reply.json()["error"]["code"] == 404
    wrong_method = client.delete("/items")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()
