"""A traced request's server span, as the edge fills it (`tracing:` on; docs/observability.md).

The edge starts it (`Tracing.request`, the client's `traceparent` honoured) before anything
else and ends it after the last byte went out, so a stream's span covers the whole stream.
What it says, in OpenTelemetry's HTTP and GenAI words where they have one:
the route and path, the method, the status the client saw (499 when it left), the model
asked, the model and replica that served (the reply's `x-orchestra-served-by` and
`x-orchestra-replica`), the key's name (never the key), whether it streamed, the tokens in and
out once the reply's `usage` is read, and a stream's time to its first byte.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import Token

from opentelemetry.context import Context
from opentelemetry.trace import Span, StatusCode
from starlette.types import Scope

from orchestra.tracing import Tracing, set_attributes

from ..core.call import REPLICA, SERVED_BY, Call
from ..core.reply import Reply
from ..usage.tokens import Tokens


class RequestTrace:
    """The `core.call.CallTrace` of a request: its server span, current from `start` to `end`
    (both in the request's task), and when the request came."""

    __slots__ = ("_started", "_token", "span")

    def __init__(self, span: Span, token: Token[Context], started: float) -> None:
        self.span = span
        self._token = token
        self._started = started  # perf_counter at the edge

    @classmethod
    def start(
        cls,
        tracing: Tracing | None,
        scope: Scope,
        route: str,
        headers: Mapping[bytes, bytes],
        started: float,
    ) -> RequestTrace | None:
        """The request's span (None before the lifespan built the tracing)."""
        if tracing is None:
            return None
        method = scope["method"]
        span, token = tracing.start_request(f"{method} {route}", headers)
        set_attributes(
            span,
            {
                "http.request.method": method,
                "http.route": route,
                "url.path": scope["path"],
                "orchestra.request_id": scope["state"]["request_id"],
            },
        )
        return cls(span, token, started)

    def end(self, status: int) -> None:
        """The status the client saw (`count.client_status`): a 5xx marks the span failed."""
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(StatusCode.ERROR)
        Tracing.end_request(self.span, self._token)

    def called(self, call: Call) -> None:
        """The call as shaped: what was asked, by whom; the floors below tell it the rest."""
        call.trace = self
        key = call.api_key
        set_attributes(
            self.span,
            {
                "gen_ai.request.model": call.payload.get("model") or call.model,
                "orchestra.stream": call.stream,
                "orchestra.key": None if key is None else key.name,
            },
        )

    def answered(self, reply: Reply) -> None:
        """The pipeline's answer: who served it."""
        headers = reply.headers
        set_attributes(
            self.span,
            {
                "orchestra.served_by": headers.get(SERVED_BY),
                "orchestra.replica": headers.get(REPLICA),
                "orchestra.backend": headers.get("x-orchestra-backend"),
            },
        )

    def usage(self, usage: object) -> None:
        tokens = Tokens.of(usage)
        if tokens is not None:
            self.span.set_attribute("gen_ai.usage.input_tokens", tokens.prompt)
            self.span.set_attribute("gen_ai.usage.output_tokens", tokens.completion)

    def first_byte(self) -> None:
        """The upstream's first byte came (for a stream: its first event): the TTFT."""
        elapsed_ms = (time.perf_counter() - self._started) * 1000
        self.span.set_attribute("orchestra.ttft_ms", round(elapsed_ms, 3))
