"""Forwarding one request to a model's replicas: retries before the first byte, then relay.

Invariants:
- Status, retries and failover are decided before any byte reaches the client. For streams the
  upstream's first body chunk is read before we answer, so an upstream that dies before it is
  still retried. After that the stream is `stream_relay.StreamRelay`'s.
- This is the one retry loop of the upstream side: another replica while untried ones are left,
  `max_attempts` allows and the retry budget has room; then, once per request, a managed
  model whose engine is gone is re-ensured and its replicas tried afresh. (Moving on to the next
  model of a chain is the pipeline's.) Every wait is bounded: `first_byte_s` per attempt,
  `backoff_s` between attempts.
- Bytes are relayed as they arrive, never re-encoded.
- `outstanding`, the in-flight gauge and the upstream connection are settled exactly once: in
  `finally` here, or by the stream once it is handed one. Answers are counted elsewhere, once
  (`edge/count.count_answer`, called by the edge).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry.trace import Span, SpanKind, StatusCode

from orchestra.config import GatewayConfig
from orchestra.tracing import Tracing

from ..balancing.policy import prepared_key
from ..balancing.replica import Replica
from ..cluster.routing import ModelRoute
from ..core.call import REPLICA, Call
from ..core.errors import (
    GatewayError,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from ..core.reply import Reply
from ..metrics import GatewayMetrics
from ..protection.retry_budget import RetryBudget
from .backend import BACKEND_HEADER
from .health import HealthMonitor
from .http1.pool import ConnectFailed, Pool
from .http1.protocol import Connection
from .stream_relay import StreamRelay
from .usage import json_reply_usage

_RETRYABLE_STATUS = frozenset({502, 503, 504})
# Failures that mean the engine is not there any more (evicted by a swap, crashed, restarting):
# for a managed model the supervisor is asked to make it ready again, once per request.
_ENGINE_GONE = frozenset({"connect", "disconnect", "empty_stream", "no_replica"})


@dataclass(slots=True)
class _Failure:
    """A failed attempt that may be retried; `reply` is the upstream's own error, if any."""

    reason: str
    error: GatewayError
    reply: Reply | None = None


class Proxy:
    def __init__(
        self,
        pool: Pool,
        health: HealthMonitor,
        metrics: GatewayMetrics,
        config: GatewayConfig,
        name: str,
        reensure: Callable[[ModelRoute], Awaitable[bool]] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.name = name  # its replies' x-orchestra-backend
        self._pool = pool
        self._tracing = tracing or Tracing(None)
        self._reensure = reensure
        self._health = health
        self._metrics = metrics
        self._timeouts = config.timeouts
        self._errors_to_mark_down = config.errors_to_mark_down
        self._retries = config.retries
        self._budget = RetryBudget(config.retries.budget_ratio, config.retries.budget_floor)
        # Bounds: `_head_s` until the first byte (a whole reply, when not relayed), the
        # stream's own watch after it (idle reads and `total_s`), `connect_s` for a new
        # connection (the pool's). No timer context around each read of a chunk.
        timeouts = config.timeouts
        self._head_s = min(timeouts.first_byte_s, timeouts.total_s)
        self._streams = StreamRelay(health, metrics, timeouts.idle_read_s, timeouts.total_s)

    async def forward(self, call: Call, route: ModelRoute) -> Reply:
        started = time.perf_counter()
        model = call.model
        inflight = self._metrics.model(model).inflight
        inflight.inc()
        self._budget.record_request()
        streaming = False
        tried: list[Replica] = []
        last: _Failure | None = None
        reensured = False
        try:
            key = await prepared_key(route.balancer, route.replicas, call.route_key)
            while True:
                # Untried replicas first (in panic: even ones marked down), then healthy again.
                replica = route.pick(tried, key) or route.pick(key=key, panic=False)
                failure: _Failure | None = None
                if replica is None:
                    # Nothing (left) to try. After a real attempt its own failure is the answer:
                    # a timeout stays a 504, an upstream 503 passes through unchanged.
                    failure = last or _Failure("no_replica", _no_upstream(route))
                else:
                    tried.append(replica)
                    call.marks.attempts += 1  # the audit line's (re-ensured tries count too)
                    # One span per attempt; its context is the engine's `traceparent`.
                    with self._tracing.span("upstream attempt", SpanKind.CLIENT) as span:
                        outcome = await self._attempt(call, route, replica, started)
                        _traced(span, replica, len(tried), last, outcome)
                    if not isinstance(outcome, _Failure):
                        streaming = outcome.streamed
                        call.answered_by = replica.url
                        return self._stamp(call, outcome)
                    failure = last = outcome
                out_of_tries = (
                    replica is None
                    or len(tried) >= self._retries.max_attempts
                    or not self._budget.try_spend()
                )
                if out_of_tries and self._may_reensure(route, failure, reensured):
                    reensured = True
                    assert self._reensure is not None
                    if await self._reensure(route):
                        self._metrics.retries.labels(model, "reensure").inc()
                        tried.clear()
                        continue
                if out_of_tries:
                    final = failure.reply or failure.error.reply()
                    final.headers.update(call.reply_headers)
                    return self._stamp(call, final)
                self._metrics.retries.labels(model, failure.reason).inc()
                await asyncio.sleep(self._retries.backoff_s)
        finally:
            if not streaming:  # a stream settles it when it ends
                inflight.dec()

    def _stamp(self, call: Call, reply: Reply) -> Reply:
        """x-orchestra-overhead-ms: the gateway's own time until the reply's head, upstream
        waits excluded (for a stream, the relay after the first chunk is not in it)."""
        overhead = time.perf_counter() - call.arrived - call.upstream_s
        reply.headers["x-orchestra-overhead-ms"] = "%.3f" % (overhead * 1000)
        self._metrics.model(call.model).overhead_seconds.observe(overhead)
        return reply

    def _may_reensure(self, route: ModelRoute, failure: _Failure, reensured: bool) -> bool:
        return (
            self._reensure is not None
            and route.managed
            and not reensured
            and failure.reason in _ENGINE_GONE
        )

    async def _attempt(
        self, call: Call, route: ModelRoute, replica: Replica, started: float
    ) -> Reply | _Failure:
        replica.outstanding += 1
        resp: Connection | None = None
        handed_to_stream = False
        try:
            sent = time.perf_counter()
            deadline = asyncio.get_running_loop().time() + self._timeouts.total_s
            try:
                async with asyncio.timeout(self._head_s):
                    resp = await self._pool.request(
                        replica.url,
                        call.method,
                        call.path,
                        upstream_headers(self._tracing.inject(call.headers), replica),
                        call.body,
                    )
                    relay = call.stream and resp.status == 200
                    first = await (resp.read() if relay else resp.read_all())
            except TimeoutError:
                self._health.mark_down(route, replica, "first byte timeout")
                return _Failure("timeout", _timeout(call, self._head_s))
            except ConnectFailed as exc:
                self._health.mark_down(route, replica, f"connect: {exc}")
                return _Failure("connect", _no_upstream(route))
            except OSError as exc:
                # The upstream dropped the connection before answering (crash, or a stale
                # keep-alive socket): retry, and let the health probe judge the replica.
                self._metrics.upstream_errors.labels(call.model, "disconnect").inc()
                return _Failure("disconnect", UpstreamError(f"upstream failed: {exc!r}"))
            finally:
                call.upstream_s += time.perf_counter() - sent

            self._metrics.model(call.model).first_byte(time.perf_counter() - started)
            headers = {
                **call.reply_headers,
                BACKEND_HEADER: self.name,
                REPLICA: replica.address,  # the engine that served it: node and port
            }
            content_type = resp.headers.get("content-type", "application/json")
            if resp.status < 500:
                replica.consecutive_500s = 0
                if not replica.healthy:  # tried in panic, and it answered: back at once
                    self._health.mark_up(route, replica)
            if relay:
                if not first:
                    return _Failure("empty_stream", UpstreamError("upstream closed the stream"))
                if call.trace is not None:
                    call.trace.first_byte()
                handed_to_stream = True  # the stream settles `outstanding` and `resp`
                return self._streams.reply(
                    call, route, replica, resp, first, headers, content_type, deadline
                )
            if "retry-after" in resp.headers:  # 429 and 503 alike: the client needs the hint
                headers["retry-after"] = resp.headers["retry-after"]
            reply = Reply(first, resp.status, headers, content_type)
            if resp.status >= 500:
                if resp.status == 500:
                    replica.consecutive_500s += 1
                if resp.status != 500 or replica.consecutive_500s >= self._errors_to_mark_down:
                    retry_after = _retry_after_s(resp.headers.get("retry-after"))
                    self._health.mark_down(route, replica, f"HTTP {resp.status}", retry_after)
                    replica.consecutive_500s = 0  # back up, it needs a new streak to go down
                if resp.status in _RETRYABLE_STATUS:
                    return _Failure(f"http_{resp.status}", Unavailable("upstream error"), reply)
            elif resp.status == 200:
                ok, usage = json_reply_usage(first, content_type)
                if not ok:
                    self._health.mark_down(route, replica, "malformed JSON reply")
                    return _Failure("malformed", UpstreamError("upstream sent malformed JSON"))
                call.usage(self._metrics, usage)
            return reply
        finally:
            if not handed_to_stream:
                replica.outstanding -= 1
                if resp is not None:
                    resp.release()


def _traced(
    span: Span, replica: Replica, attempt: int, before: _Failure | None, outcome: Reply | _Failure
) -> None:
    """An attempt's span: which engine, which try, why the one before failed, how it ended."""
    if not span.is_recording():
        return
    span.set_attribute("orchestra.replica", replica.address)
    span.set_attribute("server.address", replica.url)
    span.set_attribute("orchestra.attempt", attempt)
    if before is not None:
        span.set_attribute("orchestra.retry_reason", before.reason)
    if isinstance(outcome, _Failure):
        span.set_attribute("orchestra.outcome", outcome.reason)
        if outcome.reply is not None:
            span.set_attribute("http.response.status_code", outcome.reply.status)
        span.set_status(StatusCode.ERROR, outcome.reason)
        return
    span.set_attribute("orchestra.outcome", "answered")
    span.set_attribute("http.response.status_code", outcome.status)


def _retry_after_s(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _no_upstream(route: ModelRoute) -> Unavailable:
    return Unavailable(
        f"no upstream available for model `{route.name}` ({route.state})",
        headers={"retry-after": "1"},
    )


def _timeout(call: Call, seconds: float) -> UpstreamTimeout:
    return UpstreamTimeout(f"upstream for `{call.model}` sent nothing within {seconds:g}s")


def upstream_headers(headers: dict[str, str], replica: Replica) -> dict[str, str]:
    """An engine started with --api-key (off loopback) gets its key, whatever the client sent."""
    if replica.api_key is None:
        return headers
    return {**headers, "authorization": f"Bearer {replica.api_key}"}
