"""Traces on the edge and in the pieces both processes share (orchestra/tracing.py,
orchestra/trace_context.py), read back with the SDK's in-memory exporter: tracing off makes
nothing, the edge's server span (attributes, a client's `traceparent`, a stream's span open
until its last byte, a 5xx failed), spans below it its children, and a caller's context joined
by the supervisor's handlers reaches the tasks they start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import orjson
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from orchestra.config import ApiKey, GatewayConfig, TracingConfig, parse_config
from orchestra.gateway.cluster.routing import Router
from orchestra.gateway.core.call import Call, new_call
from orchestra.gateway.core.errors import Unavailable
from orchestra.gateway.core.reply import IterStream, Reply
from orchestra.gateway.edge.count import RequestIds
from orchestra.gateway.edge.edge import Edge
from orchestra.gateway.edge.routes import RouteTable
from orchestra.gateway.edge.shapers import Shapers
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.pipeline.engines import Engines
from orchestra.gateway.pipeline.responses import StoredResponses
from orchestra.gateway.protection.admission import Admission
from orchestra.gateway.protection.keys import KeyRing, hash_key
from orchestra.gateway.upstream.proxy import Proxy
from orchestra.gateway.usage.accounts import build_usage
from orchestra.trace_context import joined
from orchestra.tracing import Tracing, start_tracing

BODY = orjson.dumps({"model": "m", "messages": []})
CHAT = "/v1/chat/completions"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
CONFIG = TracingConfig(endpoint="http://collector.invalid:4318")


def _tracing() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return start_tracing(CONFIG, "test", exporter), exporter


def _finished(tracing: Tracing, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    asyncio.run(tracing.aclose())  # flushed: the batch processor exports on its own thread
    return list(exporter.get_finished_spans())


class Pipeline:
    """Answers with `answer`, making a child span on the way and reporting usage and the
    first byte as the proxy does."""

    def __init__(self, tracing: Tracing, answer: Reply | Exception) -> None:
        self.tracing = tracing
        self.answer = answer

    async def serve(self, call: Call) -> Reply:
        with self.tracing.span("upstream attempt", SpanKind.CLIENT):
            call.headers = self.tracing.inject(call.headers)
            if call.trace is not None:
                call.trace.first_byte()
                call.trace.usage({"prompt_tokens": 5, "completion_tokens": 7})
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _edge(tracing: Tracing, pipeline: Pipeline) -> Edge:
    app = FastAPI()
    metrics = GatewayMetrics()
    config = GatewayConfig(api_keys=[ApiKey(name="team-a", sha256=hash_key("sk-a"))])
    keys = KeyRing(config)
    app.state.gateway = SimpleNamespace(
        keys=keys,
        pipeline=pipeline,
        usage=build_usage(config, metrics, keys),
        tracing=tracing,
        audit=None,  # no audit trail
    )
    app.state.shapers = Shapers(config, lambda name: name == "m", "x-priority")
    return Edge(app, RouteTable(), RequestIds(), lambda: metrics, lambda: tracing)


def _post(edge: Edge, headers: list[tuple[bytes, bytes]], last: list[int]) -> list[Any]:
    """The messages sent; `last` gets the time (ns) the last body part went out."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", b"Bearer sk-a"), *headers],
        "client": ("127.0.0.1", 1),
    }
    incoming: list[dict[str, Any]] = [{"type": "http.request", "body": BODY}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # the client stays until the answer ends
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            last.append(time.time_ns())

    asyncio.run(edge(scope, receive, send))  # type: ignore[arg-type]
    return sent


def test_off_makes_no_span_and_sends_no_traceparent() -> None:
    tracing = start_tracing(None)
    assert not tracing.on
    assert tracing.span("a") is tracing.span("b")  # one null context: nothing per call
    with tracing.span("a") as span:
        assert not span.is_recording()
    headers = {"x-request-id": "r"}
    assert tracing.inject(headers) is headers


def test_the_server_span_says_what_was_asked_who_served_and_how_it_ended() -> None:
    tracing, exporter = _tracing()
    reply = Reply(b"{}", 200, {"x-orchestra-served-by": "m", "x-orchestra-replica": "h:1"})
    _post(_edge(tracing, Pipeline(tracing, reply)), [], [])
    attempt, server = _finished(tracing, exporter)
    assert (server.name, server.kind) == ("POST /v1/chat/completions", SpanKind.SERVER)
    assert server.parent is None
    attrs = dict(server.attributes or {})
    assert attrs["http.route"] == "/v1/chat/completions"
    assert attrs["http.response.status_code"] == 200
    assert attrs["gen_ai.request.model"] == "m"
    assert (attrs["orchestra.served_by"], attrs["orchestra.replica"]) == ("m", "h:1")
    assert attrs["orchestra.key"] == "team-a" and attrs["orchestra.stream"] is False
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (5, 7)
    assert "orchestra.ttft_ms" in attrs
    assert "sk-a" not in repr(attrs)
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    assert attempt.context.trace_id == server.context.trace_id


def test_a_client_traceparent_is_the_server_spans_parent() -> None:
    tracing, exporter = _tracing()
    traceparent = f"00-{TRACE}-{PARENT}-01".encode()
    _post(_edge(tracing, Pipeline(tracing, Reply(b"{}"))), [(b"traceparent", traceparent)], [])
    spans = _finished(tracing, exporter)
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE}
    server = next(s for s in spans if s.kind == SpanKind.SERVER)
    assert server.parent is not None and f"{server.parent.span_id:016x}" == PARENT


def test_a_streams_span_ends_after_its_last_byte() -> None:
    tracing, exporter = _tracing()
    last: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"data: 1\n\n", b"data: [DONE]\n\n"):
            await asyncio.sleep(0.01)
            yield part

    reply = Reply(IterStream(chunks()), 200, media_type="text/event-stream")
    sent = _post(_edge(tracing, Pipeline(tracing, reply)), [], last)
    assert sent[-1].get("more_body") is False and len(last) == 1
    spans = _finished(tracing, exporter)
    server = next(s for s in spans if s.kind == SpanKind.SERVER)
    attempt = next(s for s in spans if s.kind == SpanKind.CLIENT)
    assert server.end_time is not None and attempt.end_time is not None
    assert attempt.end_time < last[0] <= server.end_time  # the stream ran inside the span
    assert dict(server.attributes or {})["http.response.status_code"] == 200


def test_a_gateway_error_marks_the_server_span_failed() -> None:
    tracing, exporter = _tracing()
    _post(_edge(tracing, Pipeline(tracing, Unavailable("no engine"))), [], [])
    server = next(s for s in _finished(tracing, exporter) if s.kind == SpanKind.SERVER)
    assert dict(server.attributes or {})["http.response.status_code"] == 503
    assert server.status.status_code is StatusCode.ERROR


def test_a_joined_callers_context_reaches_the_tasks_started_in_it() -> None:
    """The supervisor's ensure handler: the swap task it starts is a child of the caller's
    (the gateway's ensure) span."""
    tracing, exporter = _tracing()

    async def swap() -> None:
        with tracing.span("swap"):
            await asyncio.sleep(0)

    async def handler() -> None:
        with joined({"traceparent": f"00-{TRACE}-{PARENT}-01"}):
            task = asyncio.create_task(swap())
        await task
        with tracing.span("after"):  # the handler's own context is back to none
            pass

    asyncio.run(handler())
    swap_span, after = _finished(tracing, exporter)
    assert f"{swap_span.context.trace_id:032x}" == TRACE
    assert swap_span.parent is not None and f"{swap_span.parent.span_id:016x}" == PARENT
    assert after.parent is None and f"{after.context.trace_id:032x}" != TRACE


def test_an_admission_wait_is_a_span_and_a_model_without_a_gate_makes_none() -> None:
    """The engines' backend (pipeline/engines.py): a model with `max_inflight` waits for its
    slot in an `admission` span, released when the reply closes; one without makes no span."""
    tracing, exporter = _tracing()
    config = parse_config(
        {
            "servers": [
                {"name": "gated", "url": "http://127.0.0.1:1", "max_inflight": 1},
                {"name": "free", "url": "http://127.0.0.1:1"},
            ]
        }
    )
    admission = Admission(config)

    async def route(model: str) -> object:
        return model

    async def forward(call: Call, route: object) -> Reply:
        return Reply(b"{}")

    router = cast(Router, SimpleNamespace(route=route))
    proxy = cast(Proxy, SimpleNamespace(forward=forward))
    engines = Engines(router, admission, proxy, cast(StoredResponses, None), tracing)

    async def serve(model: str) -> None:
        payload = {"model": model}
        call = new_call(CHAT, BODY, payload, model, request_id="r", stream=False)
        reply = await engines.forward(call)
        await reply.aclose()

    asyncio.run(serve("gated"))
    asyncio.run(serve("free"))
    (span,) = _finished(tracing, exporter)
    assert span.name == "admission"
    assert dict(span.attributes or {}) == {"orchestra.model": "gated", "orchestra.queued_before": 0}
    assert admission.gates["gated"].inflight == 0  # released when the reply closed
