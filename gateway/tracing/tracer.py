"""`Tracing`: how every floor of the gateway makes spans, built once in the app's lifespan and
handed down explicitly (the edge, the pipeline, the router, admission's caller, the proxy).

The current span travels in the OpenTelemetry context (a contextvar): a request is served in one
task (its stream is pushed from that task too), and the tasks it starts (an ensemble's members,
a loading stream's worker) copy the context, so a span started anywhere below the edge is a
child of the request's span without being passed along.

Tracing off is `Tracing(None)`: `span` hands back one context manager made at construction
(yielding the invalid, non-recording span) and `inject` the headers unchanged, so the hot path
allocates nothing and calls nothing of the SDK.
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
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer

from orchestra.config import TracingConfig
from orchestra.trace_context import PROPAGATOR, BytesHeaders
from orchestra.tracing import build_provider

_FLUSH_MS = 5000  # the spans still queued at shutdown get this long (each post: the export timeout)


class Tracing:
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
        self, name: str, kind: SpanKind = SpanKind.INTERNAL
    ) -> contextlib.AbstractContextManager[Span]:
        """A child of the current span, current while the block runs; an exception leaving the
        block is recorded on it and marks it failed."""
        if self.tracer is None:
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


def start_tracing(config: TracingConfig | None, exporter: SpanExporter | None = None) -> Tracing:
    """The gateway's tracing from the `tracing:` section (None: off). `exporter` replaces the
    OTLP one (the tests' in-memory exporter)."""
    if config is None:
        return Tracing(None)
    provider = build_provider(config, config.service_name, exporter)

    def shutdown() -> None:
        provider.force_flush(_FLUSH_MS)
        provider.shutdown()

    return Tracing(provider.get_tracer("orchestra.gateway"), shutdown)
