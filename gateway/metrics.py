"""The gateway's Prometheus metrics, on a registry owned by the app (no global state).

Labels stay bounded: `model` is a configured model name (unknown names become `_unknown`),
`status` an HTTP status code, `upstream` a configured replica URL.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

UNKNOWN_MODEL = "_unknown"

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "orchestra_requests",
            "Requests answered, by model and HTTP status.",
            ["model", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "orchestra_request_duration_seconds",
            "Whole request time, to the last byte.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb_seconds = Histogram(
            "orchestra_time_to_first_byte_seconds",
            "Time until the upstream's first body byte (first token for streams).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "orchestra_inflight_requests", "Requests in progress.", ["model"], registry=r
        )
        self.retries = Counter(
            "orchestra_upstream_retries",
            "Upstream attempts retried before the first byte.",
            ["model", "reason"],
            registry=r,
        )
        self.tokens = Counter(
            "orchestra_tokens",
            "Tokens reported in upstream `usage`, by kind (prompt|completion).",
            ["model", "kind"],
            registry=r,
        )
        self.upstream_healthy = Gauge(
            "orchestra_upstream_healthy",
            "1 when the replica is taken for new requests.",
            ["model", "upstream"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "orchestra_upstream_errors",
            "Failed upstream attempts, by kind.",
            ["model", "kind"],
            registry=r,
        )
        self.stream_errors = Counter(
            "orchestra_stream_errors",
            "Streams cut after the first byte (ended with an error event).",
            ["model"],
            registry=r,
        )
        self.ensure_seconds = Histogram(
            "orchestra_ensure_seconds",
            "Time a request waited for a cold model to become ready.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "orchestra_fallback",
            "Requests served by the fallback backend.",
            ["model", "reason"],
            registry=r,
        )

    def count_usage(self, model: str, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        for kind in ("prompt", "completion"):
            value = usage.get(f"{kind}_tokens")
            if isinstance(value, int) and value > 0:
                self.tokens.labels(model, kind).inc(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
