"""Everything stateful the gateway holds, built once in the app's lifespan (no module globals),
and the background loops that keep it fresh."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from orchestra.audit.writer import AuditLog
from orchestra.config import KvAwareConfig, OrchestraConfig
from orchestra.control import ControlClient
from orchestra.runtime import Bounded
from orchestra.tracing import Tracing

from .balancing.balancer import KvShared
from .balancing.kv.feed import KvFeeds, Wanted
from .balancing.kv.index import KvIndex
from .balancing.kv.tokens import Tokenizer
from .balancing.policy import Remembering
from .cluster.link import SupervisorLink
from .cluster.membership import RayMembership
from .cluster.nodes import Node
from .cluster.ray_view import RayView
from .cluster.routing import Router, RoutingTable
from .metrics import GatewayMetrics
from .metrics_series import Series
from .pipeline.aliases import ModelMap
from .pipeline.cache import ResponseCache, make_store
from .pipeline.engines import Engines
from .pipeline.loading import LoadingComments
from .pipeline.pipeline import Pipeline
from .pipeline.responses import StoredResponses
from .protection.admission import Admission
from .protection.keys import KeyRing
from .protection.ratelimit import RateLimiter, make_limiter
from .upstream.health import HealthMonitor
from .upstream.http1.pool import Pool
from .upstream.ollama_client import OllamaClient
from .upstream.proxy import Proxy
from .usage.accounts import Usage, build_usage

log = logging.getLogger(__name__)

# How often the charts' swap markers read the routing table's states: a sync updates them every
# `routing_refresh_s` (every 50 ms while an ensure waits); a state shorter than this is missed.
_MARKER_EVERY_S = 0.5


@dataclass
class Gateway:
    config: OrchestraConfig
    metrics: GatewayMetrics
    table: RoutingTable
    health: HealthMonitor
    link: SupervisorLink | None  # None when no model is managed by a supervisor
    keys: KeyRing
    admission: Admission
    fallback: OllamaClient | None
    models: ModelMap  # aliases, fallback chains, adapters, ensembles
    limiter: RateLimiter
    pipeline: Pipeline  # call -> response: the one entrance for every workload
    usage: Usage  # the usage ledger, the budgets, the keys made at run time
    tracing: Tracing  # spans (`tracing:`), or off; the lifespan shuts it down
    stored: StoredResponses  # the Responses API's response id -> engine (the pipeline's)
    cache: ResponseCache | None = None  # the response cache (the pipeline's), when enabled
    kv: KvShared | None = None  # the KV index and tokenizer, when a model is kv_aware
    kv_feeds: KvFeeds | None = None  # the KV-event subscriptions, when a model is kv_aware
    membership: RayMembership | None = None  # with `ray:`: the link's nodes follow Ray
    series: Series = field(default_factory=Series)  # the console's charts (the metrics' own)
    audit: AuditLog | None = None  # with `gateway.audit`: the audit trail's writer
    started: int = field(default_factory=lambda: int(time.time()))

    def maps(self) -> dict[str, Bounded]:
        """Every map below the edge keyed by what clients send or engines report, with its
        cap, each as its owner reports it (`GET /admin/runtime`; docs/design.md lists them)."""
        names = len(self.table.routes) + len(self.models.adapters)
        maps = {
            "responses.stored": self.stored.bounded(),
            "ratelimit.buckets": self.limiter.bounded(),
            "series.models": self.series.bounded(),
            "aliases.chains": Bounded(self.models.chains_held(), names),
            # every configured name, the aliases and ensembles, `_unknown` and `_fallback`
            "metrics.model_labels": Bounded(
                self.metrics.model_labels(),
                names + len(self.models.aliases) + len(self.models.ensembles) + 2,
            ),
        }
        if self.link is not None:
            maps["link.ensuring"] = Bounded(self.link.ensuring(), len(self.table.routes))
        held = self.cache.store.bounded() if self.cache is not None else None
        if held is not None:  # in memory (in Redis, its maxmemory bounds the cache)
            maps["cache.bytes"] = held  # bytes of answers, not entries
        if self.kv is not None:
            maps["kv.index"] = self.kv.index.bounded()
        if self.audit is not None:
            maps["audit.queue"] = Bounded(self.audit.waiting(), self.audit.config.queue_size)
        for name, route in self.table.routes.items():
            if isinstance(route.balancer, Remembering):
                maps[f"balancing.{name}"] = route.balancer.bounded()
        return maps

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """The background loops to run while the app serves."""
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "health": self.health.run,
            "chart-markers": lambda: self.series.follow(self.table.states, _MARKER_EVERY_S),
        }
        if self.link is not None:
            loops["supervisor-sync"] = self.link.run
        if self.membership is not None:
            loops["ray-membership"] = self.membership.run
        if self.fallback is not None:
            loops["ollama-health"] = self.fallback.run
        if self.kv_feeds is not None:
            loops["kv-events"] = self.kv_feeds.run
        loops.update(self.usage.loops())
        if self.audit is not None:
            loops["audit-writer"] = self.audit.run
        return loops


def build_gateway(
    config: OrchestraConfig,
    session: aiohttp.ClientSession,
    pool: Pool,
    tracing: Tracing | None = None,
) -> Gateway:
    """Everything the gateway holds. `pool` (`upstream.http1`) is the one client for what the
    gateway sends to engines: the model calls, probes, gauges, tokenize, the stored-responses
    probe, Ollama. `session` (aiohttp) serves the control plane only: the supervisors'
    `ControlClient`s (orchestra/control.py, shared with the CLI). `tracing` (the lifespan's;
    None: off) reaches every part that makes spans."""
    gw = config.gateway
    tracing = tracing or Tracing(None)
    series = Series(gw.console.chart_step_s, gw.console.chart_window_s)
    metrics = GatewayMetrics(series=series)
    kv_configs = {s.name: s.kv for s in config.all_servers if s.balancing == "kv_aware"}
    kv = KvShared(KvIndex(), Tokenizer(pool.fetch)) if kv_configs else None
    table = RoutingTable(config, kv)
    models = ModelMap(config, metrics.registry)
    health = HealthMonitor(
        table,
        pool,
        metrics,
        cooldown_s=gw.unhealthy_cooldown_s,
        interval_s=gw.health_check_interval_s,
        probe_timeout_s=gw.timeouts.health_probe_s,
    )
    nodes = [
        Node(ep.name, ControlClient(ep.url, ep.admin_token, session, gw.timeouts.health_probe_s))
        for ep in config.supervisor_endpoints
        if config.ray is None  # with `ray:` the nodes come from Ray (membership below)
    ]
    link = (
        SupervisorLink(
            nodes,
            table,
            metrics,
            refresh_s=gw.routing_refresh_s,
            ensure_timeout_s=gw.timeouts.ensure_s,
            node_down_after_s=gw.node_down_after_s,
            probe=health.answers,
            on_ready=health.mark_up,
            on_status=lambda status: models.sync_adapters(status.name, status.adapters),
            gpus_for=lambda name: s.tensor_parallel_size if (s := config.server(name)) else 1,
            on_gone=lambda urls: _drop(pool, urls),
        )
        if table.managed or config.supervisors or config.ray
        else None
    )
    membership = None
    if config.ray is not None and link is not None:
        token = config.ray.admin_token or config.supervisor.admin_token
        membership = RayMembership(
            RayView(config.ray),
            link,
            lambda url: ControlClient(url, token, session, gw.timeouts.health_probe_s),
            config.ray.discover_s,
        )
    router = Router(
        table,
        link.ensure if link else None,
        link.count if link else lambda model: None,
        gw.timeouts.ensure_s,
        link.first_answers if link else None,
        tracing,
    )
    admission = Admission(config)
    limiter = make_limiter(gw)
    fallback = (
        OllamaClient(config.fallback.ollama, pool, metrics)
        if config.fallback.ollama is not None
        else None
    )
    # The OpenAI-compatible engines' backend: its replies say "vllm" in x-orchestra-backend
    # (any `engine:` server speaks vLLM's API; the header has always said so for them).
    proxy = Proxy(
        pool, health, metrics, gw, "vllm", link.reensure if link else None, tracing=tracing
    )
    loading = LoadingComments(config, table, metrics)
    stored = StoredResponses(table, pool, gw.responses.max_stored, gw.timeouts.health_probe_s)
    cache = ResponseCache(gw.cache, metrics, make_store(gw)) if gw.cache.enabled else None
    pipeline = Pipeline(
        models,
        limiter,
        Engines(router, admission, proxy, stored, tracing),
        fallback,
        loading if loading.models else None,
        stored,
        metrics,
        cache,
        tracing,
    )
    keys = KeyRing(gw)
    return Gateway(
        config=config,
        metrics=metrics,
        table=table,
        health=health,
        link=link,
        keys=keys,
        admission=admission,
        fallback=fallback,
        models=models,
        limiter=limiter,
        pipeline=pipeline,
        stored=stored,
        cache=cache,
        kv=kv,
        usage=build_usage(gw, metrics, keys),
        tracing=tracing,
        kv_feeds=(
            KvFeeds(
                kv.index,
                lambda: kv_wanted(table, kv_configs),
                gw.routing_refresh_s,
                metrics.kv_index_blocks,
            )
            if kv
            else None
        ),
        membership=membership,
        series=series,
        audit=AuditLog(gw.audit, metrics.audit_dropped) if gw.audit is not None else None,
    )


def _drop(pool: Pool, urls: set[str]) -> None:
    """A node's engines gone with it: what is in flight to them fails now (the link's
    `on_gone`)."""
    failed = pool.drop(urls, "the engine's node left the cluster")
    log.warning("node gone: failed %d requests in flight to %s", failed, ", ".join(sorted(urls)))


def kv_wanted(table: RoutingTable, configs: Mapping[str, KvAwareConfig]) -> dict[str, Wanted]:
    """The engines whose KV events the kv_aware models route on: their upstreams in rotation
    (a draining engine takes no new request, so its cache no longer matters here)."""
    return {
        replica.url: Wanted(replica.kv_events, configs[name])
        for name, route in table.routes.items()
        if name in configs
        for replica in route.replicas
        if replica.kv_events is not None
    }
