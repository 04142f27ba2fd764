"""The gateway's Prometheus metrics, on a registry owned by the app (no global state).

Labels stay bounded: `model` is a configured model name (unknown names become `_unknown`),
`status` an HTTP status code, `upstream` a configured replica URL.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .metrics_series import ModelSeries, Series

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


_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)


_TOKEN_KINDS = {"prompt": "prompt_tokens", "completion": "completion_tokens"}  # label: usage key


class ModelMetrics:
    """One model's labelled children, looked up once: `labels()` costs a lock and a tuple
    hash per call, which showed up at several percent of the gateway's CPU under load."""

    __slots__ = (
        "_kinds",
        "_model",
        "_requests",
        "_statuses",
        "_tokens",
        "inflight",
        "overhead_seconds",
        "request_seconds",
        "series",
        "ttfb_seconds",
    )

    def __init__(self, metrics: GatewayMetrics, model: str) -> None:
        self._model = model
        self.inflight = metrics.inflight.labels(model)
        self.request_seconds = metrics.request_seconds.labels(model)
        self.ttfb_seconds = metrics.ttfb_seconds.labels(model)
        self.overhead_seconds = metrics.overhead_seconds.labels(model)
        self._tokens = metrics.tokens
        self._kinds: dict[str, Counter] = {}  # made on first use: no series before a token
        self._requests = metrics.requests
        self._statuses: dict[int, Counter] = {}
        self.series: ModelSeries = metrics.series.model(model)  # the console's charts

    def tokens(self, kind: str) -> Counter:
        child = self._kinds.get(kind)
        if child is None:
            child = self._kinds[kind] = self._tokens.labels(self._model, kind)
        return child

    def requests(self, status: int) -> Counter:
        child = self._statuses.get(status)
        if child is None:
            child = self._statuses[status] = self._requests.labels(self._model, str(status))
        return child

    def answered(self, status: int, started: float) -> None:
        """One answer counted (`orchestra_requests_total`, its duration since `started`, a
        `time.perf_counter()`): by the edge for HTTP answers, by the batch sender for rows."""
        self.requests(status).inc()
        self.request_seconds.observe(time.perf_counter() - started)
        self.series.answered(status)

    def first_byte(self, seconds: float) -> None:
        """The upstream's first body byte, `seconds` after the attempt was sent (TTFT)."""
        self.ttfb_seconds.observe(seconds)
        self.series.first_byte(seconds)


class GatewayMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, series: Series | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # the console's charts (the gateway passes the one its lifespan built)
        self.series = series if series is not None else Series()
        # Set by gateway/workers.py for its workers: samples go to files there and /metrics
        # renders every worker's (prometheus-client's multiprocess mode).
        self._multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self._models: dict[str, ModelMetrics] = {}
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
        self.overhead_seconds = Histogram(
            "orchestra_gateway_overhead_seconds",
            "Gateway time until the response head, upstream waits excluded "
            "(x-orchestra-overhead-ms).",
            ["model"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "orchestra_inflight_requests",
            "Requests in progress.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
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
        self.key_tokens = Counter(
            "orchestra_key_tokens",
            "Tokens used per API key (its name; past gateway.usage.max_key_labels keys, "
            "`_other`), by kind (prompt|completion|cached).",
            ["key", "kind"],
            registry=r,
        )
        self.usage_dropped = Counter(
            "orchestra_usage_dropped",
            "Usage ledger counts dropped: the rows waiting for the database were at "
            "gateway.usage.max_pending_rows.",
            registry=r,
        )
        self.audit_dropped = Counter(
            "orchestra_audit_dropped",
            "Audit lines dropped: the writer's queue was at gateway.audit.queue_size (or the "
            "file could not be written).",
            registry=r,
        )
        self.upstream_healthy = Gauge(
            "orchestra_upstream_healthy",
            "1 when the replica is taken for new requests (by every worker).",
            ["model", "upstream"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.kv_index_blocks = Gauge(
            "orchestra_kv_index_blocks",
            "Block hashes kv_aware's index holds for an engine (set every routing refresh; "
            "every worker follows the same events; at most kv.max_blocks_per_engine).",
            ["upstream"],
            registry=r,
            multiprocess_mode="livemax",
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
        self.response_cache = Counter(
            "orchestra_response_cache",
            "Cacheable-path calls by what the response cache did (hit|miss|bypass), by the "
            "model that serves them.",
            ["model", "result"],
            registry=r,
        )
        self.fallbacks = Counter(
            "orchestra_fallback",
            "Requests served by the fallback backend.",
            ["model", "reason"],
            registry=r,
        )

    def model_labels(self) -> int:
        """Distinct `model` label values over every series of this app's registry (a bound
        that holds only while no raw client string becomes a label: see the module doc)."""
        return len(
            {
                sample.labels["model"]
                for family in self.registry.collect()
                for sample in family.samples
                if "model" in sample.labels
            }
        )

    def model(self, name: str) -> ModelMetrics:
        """Bound children for a configured model name (never a raw client string)."""
        found = self._models.get(name)
        if found is None:
            found = self._models[name] = ModelMetrics(self, name)
        return found

    def count_usage(self, model: str, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        bound = self.model(model)
        for kind, field in _TOKEN_KINDS.items():
            value = usage.get(field)
            if isinstance(value, int) and value > 0:
                bound.tokens(kind).inc(value)
                if kind == "completion":
                    bound.series.completion_tokens(value)

    def render(self) -> bytes:
        if self._multiprocess_dir:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, self._multiprocess_dir)
            return generate_latest(merged)
        return generate_latest(self.registry)
