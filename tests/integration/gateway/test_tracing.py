"""Traces from the real gateway (`tracing:` on) with fake engines, received by an in-process
OTLP/HTTP sink (tests/otlp_sink.py): one server span per request with its attributes, an
attempt span under it whose context is the `traceparent` the engine saw, two attempt spans
for a retried request, and a client's `traceparent` honoured."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from orchestra.gateway.protection.keys import hash_key
from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine
from tests.fake_engine import FakeEngineProcess, free_port
from tests.integration.gateway.batch_helpers import chat_line, jsonl, submit, wait_status
from tests.otlp_sink import OtlpSink, Span

pytestmark = pytest.mark.timeout(90)

KEY = "sk-trace-test"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess("--served-model-name", "m1", "failover") as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    sink: OtlpSink, engine: FakeEngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    section = fast_gateway_section(free_port(), unhealthy_cooldown_s=30)
    section["api_keys"] = [{"name": "team-a", "sha256": hash_key(KEY)}]
    config = {
        "gateway": section,
        "servers": [
            {"name": "m1", "url": engine.url},
            {
                "name": "failover",
                "replicas": [{"url": f"http://127.0.0.1:{free_port()}"}, {"url": engine.url}],
            },
            {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"},
        ],
        "fallbacks": {"dead": ["m1"]},
        "batch": {"dir": str(tmp_path_factory.mktemp("batches")), "poll_s": 0.05},
        "tracing": {"endpoint": sink.url, "service_name": "gw-under-test"},
    }
    with GatewayProcess(config) as gw:
        yield gw


def _chat(
    gateway: GatewayProcess, model: str, stream: bool = False, **headers: str
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    reply = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {KEY}", **headers},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return reply


def _by_name(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def _engine_traceparent(engine: FakeEngineProcess, request_id: str) -> str:
    records = [r for r in engine.stats()["records"] if r["x_request_id"] == request_id]
    assert len(records) == 1, records
    return str(records[0]["traceparent"])


def _request_trace(sink: OtlpSink, request_id: str, attempts: int = 1) -> list[Span]:
    """The spans of the trace whose server span carries `request_id`."""

    def server() -> list[Span]:
        return [
            s
            for s in _by_name(sink.received(), "POST /v1/chat/completions")
            if s.attributes.get("orchestra.request_id") == request_id
        ]

    sink.wait_trace(lambda spans: bool(server()))
    trace_id = server()[0].trace_id
    return sink.wait_trace(
        lambda spans: len(_by_name(spans, "upstream attempt")) >= attempts, trace_id
    )


def test_a_request_is_a_server_span_with_an_attempt_the_engine_joined(
    sink: OtlpSink, engine: FakeEngineProcess, gateway: GatewayProcess
) -> None:
    reset_engine(engine)
    reply = _chat(gateway, "m1", **{"x-request-id": "trace-1"})
    spans = _request_trace(sink, "trace-1")
    (server,) = _by_name(spans, "POST /v1/chat/completions")
    assert server.kind == 2 and server.parent_id == "" and server.service == "gw-under-test"
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.request.model"] == "m1"
    assert server.attributes["orchestra.served_by"] == "m1"
    assert server.attributes["orchestra.replica"] == reply.headers["x-orchestra-replica"]
    assert server.attributes["orchestra.key"] == "team-a"
    assert server.attributes["orchestra.stream"] is False
    usage = reply.json()["usage"]
    assert server.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert server.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert KEY not in repr(spans)  # the key's name, never the key

    (attempt,) = _by_name(spans, "upstream attempt")
    (limit,) = _by_name(spans, "rate_limit")
    assert limit.parent_id == server.span_id
    assert not _by_name(spans, "chain step")  # a chain of one target: its attempts say it all
    assert attempt.parent_id == server.span_id and attempt.kind == 3
    assert attempt.attributes["orchestra.outcome"] == "answered"
    # The engine was sent the attempt span's context: vLLM's span is the attempt's child.
    version, trace_id, parent, flags = _engine_traceparent(engine, "trace-1").split("-")
    assert (version, trace_id, parent) == ("00", server.trace_id, attempt.span_id)
    assert int(flags, 16) & 1  # sampled


def test_a_stream_span_lasts_to_its_last_byte_and_has_its_ttft(
    sink: OtlpSink, engine: FakeEngineProcess, gateway: GatewayProcess
) -> None:
    reset_engine(engine)
    engine.configure(token_rate=50, ttft_ms=100)  # 3 tokens: ~60 ms after the first
    _chat(gateway, "m1", stream=True, **{"x-request-id": "trace-stream"})
    spans = _request_trace(sink, "trace-stream")
    (server,) = _by_name(spans, "POST /v1/chat/completions")
    (attempt,) = _by_name(spans, "upstream attempt")
    assert server.attributes["orchestra.stream"] is True
    assert server.attributes["orchestra.ttft_ms"] >= 100
    assert server.attributes["gen_ai.usage.output_tokens"] == 3
    # The attempt ends at the stream's first event; the request span only after its last.
    assert server.end_ns - attempt.end_ns >= 30_000_000


def test_a_retried_request_shows_both_attempts(
    sink: OtlpSink, engine: FakeEngineProcess, gateway: GatewayProcess
) -> None:
    """`failover`'s first replica is nobody: a request that tries it first goes on to the
    engine. Round-robin sends one of the first two requests there."""
    reset_engine(engine)
    for n in range(4):
        request_id = f"trace-retry-{n}"
        _chat(gateway, "failover", **{"x-request-id": request_id})
        spans = _request_trace(sink, request_id)
        attempts = sorted(_by_name(spans, "upstream attempt"), key=lambda s: s.start_ns)
        if len(attempts) == 2:
            break
    else:
        pytest.fail("no request tried the dead replica first")
    first, second = attempts
    assert first.attributes["orchestra.outcome"] == "connect" and first.status == 2
    assert second.attributes["orchestra.retry_reason"] == "connect"
    assert second.attributes["orchestra.outcome"] == "answered"
    assert (second.attributes["orchestra.attempt"], first.parent_id) == (2, second.parent_id)
    tail = _engine_traceparent(engine, request_id).split("-")[2]
    assert tail == second.span_id


def test_a_fallback_chain_shows_each_step(
    sink: OtlpSink, engine: FakeEngineProcess, gateway: GatewayProcess
) -> None:
    reset_engine(engine)
    _chat(gateway, "dead", **{"x-request-id": "trace-chain"})
    spans = _request_trace(sink, "trace-chain")
    (server,) = _by_name(spans, "POST /v1/chat/completions")
    first, second = sorted(_by_name(spans, "chain step"), key=lambda s: s.start_ns)
    assert (first.parent_id, second.parent_id) == (server.span_id, server.span_id)
    assert first.attributes["orchestra.target"] == "dead" and first.status == 2
    assert second.attributes["orchestra.target"] == "m1"
    assert second.attributes["orchestra.after"] == "http_503"  # the dead one's answer
    assert server.attributes["orchestra.served_by"] == "m1"
    served = [s for s in _by_name(spans, "upstream attempt") if s.parent_id == second.span_id]
    assert [s.attributes["orchestra.outcome"] for s in served] == ["answered"]


def test_a_batch_is_one_trace_with_a_span_per_row(
    sink: OtlpSink, engine: FakeEngineProcess, gateway: GatewayProcess
) -> None:
    reset_engine(engine)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    batch = submit(client, jsonl([chat_line(i) for i in range(3)]))
    assert wait_status(client, batch.id).status == "completed"

    def batch_trace(spans: list[Span]) -> list[Span]:
        roots = [s for s in spans if s.attributes.get("orchestra.batch_id") == batch.id]
        return [s for s in spans if roots and s.trace_id == roots[0].trace_id]

    # The batch's span ends last (after its rows): its trace is whole once it arrived.
    trace = batch_trace(sink.wait_trace(lambda spans: bool(batch_trace(spans))))
    (root,) = _by_name(trace, "batch")
    rows = _by_name(trace, "batch row")
    assert len(rows) == 3 and {r.parent_id for r in rows} == {root.span_id}
    assert {r.attributes["http.response.status_code"] for r in rows} == {200}
    attempts = _by_name(trace, "upstream attempt")
    assert sorted(a.parent_id for a in attempts) == sorted(r.span_id for r in rows)


def test_a_client_traceparent_is_honoured(
    sink: OtlpSink, engine: FakeEngineProcess, gateway: GatewayProcess
) -> None:
    reset_engine(engine)
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    _chat(gateway, "m1", traceparent=traceparent, **{"x-request-id": "trace-client"})
    spans = _request_trace(sink, "trace-client")
    (server,) = _by_name(spans, "POST /v1/chat/completions")
    assert (server.trace_id, server.parent_id) == (CLIENT_TRACE, CLIENT_PARENT)
    assert _engine_traceparent(engine, "trace-client").split("-")[1] == CLIENT_TRACE
