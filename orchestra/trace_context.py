"""How a trace crosses a process: W3C trace context (`traceparent`, `tracestate`), what clients
send the gateway, the gateway sends engines (vLLM joins it) and its supervisor calls, and the
supervisor reads. OpenTelemetry's API only (no SDK), so the CLI's control client loads little.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()


def with_current(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` plus the current span's `traceparent` (a copy), or `headers` itself when no
    span is current (tracing off, a background loop)."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return {**headers, **carrier} if carrier else headers


@contextlib.contextmanager
def joined(headers: Mapping[str, str]) -> Iterator[None]:
    """The caller's trace context (its `traceparent`) current while the block runs, so the
    spans started in it, and in the tasks it starts, join the caller's trace; nothing when it
    sent none."""
    if "traceparent" not in headers:
        yield
        return
    token = context.attach(PROPAGATOR.extract(headers))
    try:
        yield
    finally:
        context.detach(token)


class BytesHeaders(Getter[Mapping[bytes, bytes]]):
    """Reads a `traceparent` out of raw ASGI headers (lower-case bytes names) without
    decoding the others."""

    def get(self, carrier: Mapping[bytes, bytes], key: str) -> list[str] | None:
        value = carrier.get(key.encode("latin-1"))
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Mapping[bytes, bytes]) -> list[str]:
        return [name.decode("latin-1") for name in carrier]
