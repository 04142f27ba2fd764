"""The one edge (edge/edge.py) on a model call's edges: what it sends and what it
counts when the client leaves mid-body, before the gateway is built, on an error in Anthropic's
shape, and for a whole reply (the request id added, the pipeline's headers kept)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
from fastapi import FastAPI

from orchestra.config import GatewayConfig
from orchestra.gateway.core.call import Call
from orchestra.gateway.core.errors import Unavailable
from orchestra.gateway.core.reply import Reply
from orchestra.gateway.edge.count import RequestIds
from orchestra.gateway.edge.edge import Edge
from orchestra.gateway.edge.routes import RouteTable
from orchestra.gateway.edge.shapers import Shapers
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.protection.keys import KeyRing
from orchestra.gateway.usage.accounts import build_usage

BODY = orjson.dumps({"model": "m", "messages": []})


class Pipeline:
    def __init__(self, answer: Reply | Exception) -> None:
        self.answer = answer
        self.calls: list[Call] = []

    async def serve(self, call: Call) -> Reply:
        self.calls.append(call)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _layer(pipeline: Pipeline | None) -> tuple[Edge, GatewayMetrics]:
    app = FastAPI()
    metrics = GatewayMetrics()
    config = GatewayConfig()
    if pipeline is not None:
        keys = KeyRing(config)
        app.state.gateway = SimpleNamespace(
            keys=keys,
            pipeline=pipeline,
            usage=build_usage(config, metrics, keys),  # no database: nothing is flushed here
            audit=None,  # no audit trail
        )
        app.state.shapers = Shapers(config, lambda name: name == "m", "x-priority")
    return Edge(app, RouteTable(), RequestIds(), lambda: metrics), metrics


def _call(
    layer: Edge, path: str, messages: list[dict[str, Any]], headers: list[Any] | None = None
) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers or [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
    }
    incoming = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(layer(scope, receive, send))  # type: ignore[arg-type]
    return sent


def _count(metrics: GatewayMetrics, model: str, status: str) -> float:
    value = metrics.registry.get_sample_value(
        "orchestra_requests_total", {"model": model, "status": status}
    )
    return value or 0.0


def test_a_client_leaving_mid_body_gets_nothing_and_counts_as_499() -> None:
    pipeline = Pipeline(Reply(b"{}"))
    layer, metrics = _layer(pipeline)
    first = {"type": "http.request", "body": BODY[:5], "more_body": True}
    sent = _call(layer, "/v1/chat/completions", [first, {"type": "http.disconnect"}])
    assert sent == []
    assert pipeline.calls == []
    assert _count(metrics, "_unknown", "499") == 1


def test_before_the_gateway_is_built_a_503_with_the_request_id() -> None:
    layer, metrics = _layer(None)
    headers = [(b"x-request-id", b"abc")]
    sent = _call(layer, "/v1/chat/completions", [{"type": "http.request", "body": BODY}], headers)
    assert sent[0]["status"] == 503
    assert (b"x-request-id", b"abc") in sent[0]["headers"]
    assert (b"retry-after", b"1") in sent[0]["headers"]
    assert _count(metrics, "_unknown", "503") == 1


def test_an_error_on_anthropics_path_is_in_anthropics_shape() -> None:
    layer, metrics = _layer(Pipeline(Unavailable("no engine")))
    sent = _call(layer, "/v1/messages", [{"type": "http.request", "body": BODY}])
    assert sent[0]["status"] == 503
    body = orjson.loads(sent[1]["body"])
    assert body["type"] == "error" and body["error"]["message"] == "no engine"
    assert _count(metrics, "m", "503") == 1


def test_a_whole_reply_keeps_its_headers_and_gets_a_new_request_id() -> None:
    reply = Reply(b'{"ok": 1}', 200, {"x-orchestra-replica": "h:1"})
    pipeline = Pipeline(reply)
    layer, metrics = _layer(pipeline)
    sent = _call(layer, "/v1/chat/completions", [{"type": "http.request", "body": BODY}])
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    headers = dict(sent[0]["headers"])
    assert headers[b"x-orchestra-replica"] == b"h:1"
    assert len(headers[b"x-request-id"]) == 32  # made here: the client sent none
    assert pipeline.calls[0].headers["x-request-id"] == headers[b"x-request-id"].decode()
    assert sent[1]["body"] == b'{"ok": 1}' and not sent[1].get("more_body", False)
    assert "x-request-id" not in reply.headers  # not changed
    assert _count(metrics, "m", "200") == 1


def test_each_call_carries_its_routes_dialect_and_keeps_it_when_derived() -> None:
    pipeline = Pipeline(Reply(b"{}", 200))
    layer, _ = _layer(pipeline)
    paths = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"]
    for path in paths:
        _call(layer, path, [{"type": "http.request", "body": BODY}])
    dialects = [call.dialect for call in pipeline.calls]
    assert dialects == ["openai", "openai", "responses", "anthropic"]
    assert pipeline.calls[3].derive(model="other").dialect == "anthropic"


def test_every_json_model_call_carries_its_route_entrys_traits() -> None:
    """Derived from the route table: whatever an entry declares (the dialect, whether an
    ensemble may serve it, a batch may target it, the Ollama path) is what its calls carry, so
    no floor below the edge keeps a path list of its own."""
    pipeline = Pipeline(Reply(b"{}", 200))
    layer, _ = _layer(pipeline)
    specs = [s for s in RouteTable().model_calls.values() if s.body == "json"]
    for spec in specs:
        _call(layer, spec.path, [{"type": "http.request", "body": BODY}])
    assert [call.traits for call in pipeline.calls] == [spec.traits for spec in specs]
    table = RouteTable()
    assert set(table.batch_endpoints()) == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    }
    ensembled = {s.path for s in table.routes if s.traits.ensemble}
    assert ensembled == {"/v1/chat/completions", "/v1/completions"}
