"""A minimal OTLP/HTTP trace receiver for the tests: `POST /v1/traces` (protobuf, as the
OpenTelemetry SDK's exporter and vLLM send it), the spans kept in memory and read back as plain
dicts. Runs on a thread of the test process; `with OtlpSink() as sink:` starts and stops it.

The e2e test uses a real collector (Arize Phoenix, tests/phoenix.py); this one lets the
integration tests check what the gateway exports without installing one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.conftest import wait_until


@dataclass
class Span:
    service: str
    name: str
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_id: str  # "" for a root
    kind: int  # OTLP's: 2 server, 3 client
    attributes: dict[str, Any]
    status: int  # OTLP's: 0 unset, 1 ok, 2 error
    start_ns: int
    end_ns: int
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _decode(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource in request.resource_spans:
        resource_attrs = {a.key: _value(a.value) for a in resource.resource.attributes}
        service = str(resource_attrs.get("service.name", ""))
        for scope in resource.scope_spans:
            for s in scope.spans:
                spans.append(
                    Span(
                        service=service,
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        kind=s.kind,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        status=s.status.code,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        links=[(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                    )
                )
    return spans


class OtlpSink:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                ok = self.path == "/v1/traces"
                if ok:
                    received = _decode(body)
                    with sink._lock:
                        sink.spans.extend(received)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test says what it missed

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def received(self) -> list[Span]:
        with self._lock:
            return list(self.spans)

    def wait_trace(
        self, done: Callable[[list[Span]], bool], trace_id: str | None = None, timeout: float = 30
    ) -> list[Span]:
        """The spans received (of `trace_id`, when given) once `done` says they are all
        there; the gateway batches its exports (a few seconds apart)."""
        found: list[Span] = []

        def ready() -> bool:
            nonlocal found
            found = [s for s in self.received() if trace_id is None or s.trace_id == trace_id]
            return done(found)

        wait_until(ready, timeout=timeout, what="the trace's spans at the OTLP sink")
        return found
