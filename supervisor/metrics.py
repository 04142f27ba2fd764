"""Prometheus metrics, `orchestra_supervisor_*`, on a per-app registry (no global state).

Events (swaps, swap seconds, failures) are counted as they happen; states, restarts, page-cache
residency and GPU use are read from the manager at scrape time by a collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .states import EngineState

SWAP_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1200)


@dataclass(frozen=True)
class ModelSample:
    name: str
    state: EngineState
    restarts: int
    engines_by_state: dict[EngineState, int]
    cache_total: int
    cache_resident: int
    demand: int
    gpus: int


class _Snapshot(Collector):
    def __init__(self, sample: Callable[[], tuple[list[ModelSample], int]]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        models, gpus_total = self._sample()
        p = "orchestra_supervisor_"
        state = GaugeMetricFamily(
            p + "engine_state", "1 for the model's state", labels=["model", "state"]
        )
        engines = GaugeMetricFamily(p + "engines", "engines per state", labels=["model", "state"])
        restarts = CounterMetricFamily(p + "restarts", "engine restarts", labels=["model"])
        total = GaugeMetricFamily(p + "page_cache_bytes", "weight bytes", labels=["model"])
        resident = GaugeMetricFamily(
            p + "page_cache_resident_bytes", "weight bytes in the page cache", labels=["model"]
        )
        fraction = GaugeMetricFamily(
            p + "page_cache_fraction", "fraction of weights cached", labels=["model"]
        )
        demand = GaugeMetricFamily(p + "demand_requests", "requests in window", labels=["model"])
        held = GaugeMetricFamily(p + "model_gpus", "GPUs held by the model", labels=["model"])
        for m in models:
            for s in EngineState:
                state.add_metric([m.name, s.value], 1.0 if m.state is s else 0.0)
                engines.add_metric([m.name, s.value], float(m.engines_by_state.get(s, 0)))
            restarts.add_metric([m.name], float(m.restarts))
            total.add_metric([m.name], float(m.cache_total))
            resident.add_metric([m.name], float(m.cache_resident))
            fraction.add_metric(
                [m.name], m.cache_resident / m.cache_total if m.cache_total else 0.0
            )
            demand.add_metric([m.name], float(m.demand))
            held.add_metric([m.name], float(m.gpus))
        gpus = GaugeMetricFamily(p + "gpus", "GPUs under management")
        gpus.add_metric([], float(gpus_total))
        yield from (state, engines, restarts, total, resident, fraction, demand, held, gpus)


class SupervisorMetrics:
    def __init__(self, sample: Callable[[], tuple[list[ModelSample], int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        p = "orchestra_supervisor_"
        self.swaps = Counter(p + "swaps", "swaps in", ["model"], registry=self.registry)
        self.swap_failures = Counter(
            p + "swap_failures", "swaps that failed", ["model"], registry=self.registry
        )
        self.swap_seconds = Histogram(
            p + "swap_seconds",
            "ensure-to-ready time of a swap",
            buckets=SWAP_BUCKETS,
            registry=self.registry,
        )
        self.drain_seconds = Histogram(
            p + "drain_seconds",
            "time an evicted model waited for the gateways' in-flight requests to finish",
            buckets=SWAP_BUCKETS,
            registry=self.registry,
        )
        self.evictions = Counter(
            p + "evictions", "models evicted", ["model", "how"], registry=self.registry
        )
        self.rotations = Counter(p + "rotations", "demand rotations", registry=self.registry)
        self.audit_dropped = Counter(
            p + "audit_dropped",
            "Audit lines of control-API actions dropped (gateway.audit: a full queue, or the "
            "file could not be written)",
            registry=self.registry,
        )
        self.registry.register(_Snapshot(sample))
