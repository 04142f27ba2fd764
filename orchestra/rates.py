"""Per-model live rates from the gateway's own counters (no Prometheus server needed).

Shared by the gateway's console (`gateway/console/feed.py`) and `orchestra top`, so it lives
here, outside both the gateway and the supervisor.

A `Snapshot` is the cumulative counters at one instant, read from the app's registry (the
console) or from the `/metrics` text (`orchestra top`). Rates are differences between two
snapshots: requests/s, the share of requests that failed (HTTP 5xx, or a stream cut after its
first byte), mean time to first byte, completion tokens/s (from the replies' `usage`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(slots=True)
class Counters:
    requests: float = 0.0
    errors: float = 0.0
    ttfb_sum: float = 0.0
    ttfb_count: float = 0.0
    completion_tokens: float = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # time.monotonic()
    models: dict[str, Counters] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelRates:
    requests_per_s: float
    error_rate: float | None  # failed / answered in the window; None without requests
    ttft_s: float | None  # mean time to first byte in the window; None without requests
    tokens_per_s: float

    def as_dict(self) -> dict[str, float | None]:
        return {
            "requests_per_s": round(self.requests_per_s, 3),
            "error_rate": None if self.error_rate is None else round(self.error_rate, 4),
            "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
        }


def _collect(samples: Iterable[Sample], at: float) -> Snapshot:
    models: dict[str, Counters] = collections.defaultdict(Counters)
    for s in samples:
        model = s.labels.get("model")
        if model is None:
            continue
        c = models[model]
        if s.name == "orchestra_requests_total":
            c.requests += s.value
            if s.labels.get("status", "").startswith("5"):
                c.errors += s.value
        elif s.name == "orchestra_stream_errors_total":
            c.errors += s.value
        elif s.name == "orchestra_time_to_first_byte_seconds_sum":
            c.ttfb_sum += s.value
        elif s.name == "orchestra_time_to_first_byte_seconds_count":
            c.ttfb_count += s.value
        elif s.name == "orchestra_tokens_total" and s.labels.get("kind") == "completion":
            c.completion_tokens += s.value
    return Snapshot(at, dict(models))


def from_registry(registry: CollectorRegistry, at: float | None = None) -> Snapshot:
    samples = (s for family in registry.collect() for s in family.samples)
    return _collect(samples, time.monotonic() if at is None else at)


def from_text(text: str, at: float | None = None) -> Snapshot:
    """A snapshot from Prometheus exposition text (the gateway's `/metrics`)."""
    samples = (s for family in text_string_to_metric_families(text) for s in family.samples)
    return _collect(samples, time.monotonic() if at is None else at)


def rates(older: Snapshot, newer: Snapshot) -> dict[str, ModelRates]:
    """Rates per model between two snapshots (a model absent from `older` started at zero)."""
    dt = newer.at - older.at
    out: dict[str, ModelRates] = {}
    for model, new in newer.models.items():
        old = older.models.get(model, Counters())
        requests = max(new.requests - old.requests, 0.0)
        ttfb_n = new.ttfb_count - old.ttfb_count
        out[model] = ModelRates(
            requests_per_s=requests / dt if dt > 0 else 0.0,
            error_rate=(new.errors - old.errors) / requests if requests > 0 else None,
            ttft_s=(new.ttfb_sum - old.ttfb_sum) / ttfb_n if ttfb_n > 0 else None,
            tokens_per_s=(new.completion_tokens - old.completion_tokens) / dt if dt > 0 else 0.0,
        )
    return out


class RateWindow:
    """The last `window_s` of snapshots; `rates()` spans the oldest kept to the newest."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._snapshots: collections.deque[Snapshot] = collections.deque()

    def add(self, snapshot: Snapshot) -> None:
        self._snapshots.append(snapshot)
        while len(self._snapshots) > 2 and snapshot.at - self._snapshots[1].at >= self.window_s:
            self._snapshots.popleft()

    @property
    def latest(self) -> Snapshot | None:
        return self._snapshots[-1] if self._snapshots else None

    def rates(self) -> dict[str, ModelRates]:
        if len(self._snapshots) < 2:
            return {}
        return rates(self._snapshots[0], self._snapshots[-1])
