"""The OpenTelemetry tracer provider both processes build from the `tracing:` section (the
gateway in its lifespan, the supervisor at start): the official SDK, spans batched and posted
as OTLP/HTTP to `<endpoint>/v1/traces`, new traces sampled at `sample_ratio` (a caller's
sampled `traceparent` is followed either way). No global provider is set: each process hands
its `Tracer` to what makes spans, and shuts the provider down (flushing what is queued) when it
stops. Tracing off is no provider at all (`None`), never one that samples nothing. How a trace
crosses a process is `trace_context.py` (the API only: the CLI does not load the SDK).
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from orchestra.config import TracingConfig


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
