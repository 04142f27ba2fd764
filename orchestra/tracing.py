"""Traces (OpenTelemetry) for both processes, from the `tracing:` section: the official SDK,
spans batched and posted as OTLP/HTTP to `<endpoint>/v1/traces`, new traces sampled at
`sample_ratio` (a caller's sampled `traceparent` is followed either way). No global provider
is set: each process builds its `Tracing` (the gateway in its lifespan, the supervisor in its
own) and hands it to what makes spans, and shuts it down (flushing what is queued) when it
stops. Tracing off is no provider at all, never one that samples nothing. How a trace crosses
a process is `trace_context.py` (the API only: the CLI's control client does not load the SDK).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer

from orchestra.config import TracingConfig
from orchestra.trace_context import PROPAGATOR, BytesHeaders

_FLUSH_MS = 5000  # the spans still queued at shutdown get this long (each post: the export timeout)


class Tracing:
    """How a process makes spans: built once (the gateway's lifespan, the supervisor's) and
    handed down explicitly. The current span travels in OpenTelemetry's context (a
    contextvar), so a span started below another is its child without being passed along.
    Off (`Tracing(None)`): `span` hands back one context manager made at construction (yielding
    the invalid, non-recording span) and `inject` the headers unchanged, so a hot path
    allocates nothing and calls nothing of the SDK."""

    __slots__ = ("_getter", "_off", "_shutdown", "tracer")

    def __init__(self, tracer: Tracer | None, shutdown: Callable[[], None] | None = None) -> None:
        self.tracer = tracer  # None: tracing off
        self._shutdown = shutdown  # the provider's flush and shutdown (blocking)
        self._off = contextlib.nullcontext(INVALID_SPAN)  # reusable: it holds no state
        self._getter = BytesHeaders()

    @property
    def on(self) -> bool:
        return self.tracer is not None

    def span(
        self, name: str, kind: SpanKind = SpanKind.INTERNAL, *, when: bool = True
    ) -> contextlib.AbstractContextManager[Span]:
        """A child of the current span, current while the block runs; an exception leaving the
        block is recorded on it and marks it failed. `when` False: none (a span that would say
        nothing new; each costs tens of µs of CPU in the SDK)."""
        if self.tracer is None or not when:
            return self._off
        return self.tracer.start_as_current_span(name, kind=kind)

    def inject(self, headers: dict[str, str]) -> dict[str, str]:
        """`headers` with the current span's `traceparent` (a copy); unchanged when off."""
        if self.tracer is None:
            return headers
        headers = dict(headers)
        PROPAGATOR.inject(headers)
        return headers

    def start_request(
        self, name: str, headers: Mapping[bytes, bytes]
    ) -> tuple[Span, Token[Context]]:
        """A request's server span, made current, joined to the client's `traceparent` when
        it sent one; `end_request` with the token it returns (in the same task) ends it."""
        assert self.tracer is not None
        parent = PROPAGATOR.extract(headers, getter=self._getter)
        span = self.tracer.start_span(name, parent, kind=SpanKind.SERVER)
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    @staticmethod
    def end_request(span: Span, token: Token[Context]) -> None:
        otel_context.detach(token)
        span.end()

    async def aclose(self) -> None:
        """Flush and shut the provider down (off the loop: the SDK's shutdown blocks)."""
        if self._shutdown is not None:
            await asyncio.to_thread(self._shutdown)


def set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    """Attributes whose value is known (None ones left out: OpenTelemetry refuses them)."""
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)


def start_tracing(
    config: TracingConfig | None,
    service_name: str | None = None,
    exporter: SpanExporter | None = None,
) -> Tracing:
    """A process's tracing from the `tracing:` section (None: off), as `service_name` (default:
    the section's). `exporter` replaces the OTLP one (the tests' in-memory exporter)."""
    if config is None:
        return Tracing(None)
    service_name = service_name or config.service_name
    provider = build_provider(config, service_name, exporter)

    def shutdown() -> None:
        provider.force_flush(_FLUSH_MS)
        provider.shutdown()

    return Tracing(provider.get_tracer(service_name), shutdown)


def build_provider(
    config: TracingConfig, service_name: str, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A provider exporting to `config`'s collector (or to `exporter`: the tests' in-memory
    one). The export timeout bounds each post, and so the flush at shutdown."""
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        resource=Resource.create({SERVICE_NAME: service_name}),
    )
    if exporter is None:
        exporter = OTLPSpanExporter(endpoint=config.traces_url, timeout=config.export_timeout_s)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, export_timeout_millis=config.export_timeout_s * 1000)
    )
    return provider
