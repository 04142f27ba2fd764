"""Model -> replicas: the routing table, and the router that makes a cold model ready first.

The table is built from config. Unmanaged models (`url:`/`replicas:` with URLs) keep their
replicas for life; managed models get theirs from the supervisor's model table: READY upstreams
take new requests, draining ones (being evicted) only finish what they have.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from orchestra.config import BalancingPolicy, OrchestraConfig, ReplicaKvEvents, ServerConfig
from orchestra.control import GatewayReport, ModelStatus
from orchestra.protocol import KvEvents
from orchestra.tracing import Tracing

from ..balancing.balancer import KvShared, make_balancer
from ..balancing.policy import Balancer
from ..balancing.replica import Replica
from ..core.errors import ModelNotFound, Unavailable
from ..core.request_key import NO_KEY, RequestKey


@dataclass(eq=False)
class ModelRoute:
    name: str
    managed: bool
    policy: BalancingPolicy
    replicas: list[Replica]  # take new requests
    balancer: Balancer = field(repr=False)
    # Managed: the supervisor's word for the model ("unknown" until it answers). What clients
    # see is `state`, which for unmanaged models is derived from replica health.
    reported_state: str = "ready"
    # Engines the supervisor is evicting: out of rotation, kept here until it drops them so
    # their `outstanding` counts still reach it.
    draining: list[Replica] = field(default_factory=list)

    def pick(
        self, exclude: Collection[Replica] = (), key: RequestKey = NO_KEY, panic: bool = True
    ) -> Replica | None:
        """A healthy replica not in `exclude`. Panic (Envoy's panic threshold at 100%): when
        no replica of the model is healthy, the untried ones are tried anyway; a cool-down
        may outlast the fault, and a success puts the replica back at once."""
        candidates = [r for r in self.replicas if r.healthy and r not in exclude]
        if not candidates:
            if not panic or any(r.healthy for r in self.replicas):
                return None
            candidates = [r for r in self.replicas if r not in exclude]
            if not candidates:
                return None
        return candidates[0] if len(candidates) == 1 else self.balancer.pick(candidates, key)

    @property
    def serving(self) -> bool:
        return any(r.healthy for r in self.replicas)

    @property
    def state(self) -> str:
        if self.managed:
            return self.reported_state
        return "ready" if self.serving else "down"

    def set_upstreams(
        self,
        urls: Sequence[str],
        draining: Sequence[str] = (),
        keys: Mapping[str, str | None] | None = None,
        kv_events: Mapping[str, KvEvents] | None = None,
    ) -> None:
        """Adopt the supervisors' upstreams, keeping counters of replicas that stay. `keys`:
        the --api-key of each engine URL that has one."""
        known = {r.url: r for r in (*self.replicas, *self.draining)}
        self.replicas = [known.get(url) or Replica(url=url) for url in urls]
        self.draining = [known.get(url) or Replica(url=url) for url in draining]
        for replica in (*self.replicas, *self.draining):
            replica.api_key = (keys or {}).get(replica.url)
            replica.kv_events = (kv_events or {}).get(replica.url)


def build_route(server: ServerConfig, kv: KvShared | None = None) -> ModelRoute:
    if server.managed:
        replicas: list[Replica] = []
        state = "unknown"
    elif server.url:
        replicas, state = [Replica(url=server.url, weight=server.weight)], "ready"
    else:
        replicas = [
            Replica(url=r.url or "", weight=r.weight, kv_events=_kv_events(r.kv_events))
            for r in server.replicas or []
        ]
        state = "ready"
    return ModelRoute(
        name=server.name,
        managed=server.managed,
        policy=server.balancing,
        replicas=replicas,
        balancer=make_balancer(server.balancing, server.affinity, server.kv, kv),
        reported_state=state,
    )


def _kv_events(config: ReplicaKvEvents | None) -> KvEvents | None:
    return KvEvents.model_validate(config.model_dump()) if config is not None else None


class RoutingTable:
    def __init__(self, config: OrchestraConfig, kv: KvShared | None = None) -> None:
        self.routes = {s.name: build_route(s, kv) for s in config.all_servers}

    def get(self, name: str) -> ModelRoute | None:
        return self.routes.get(name)

    def states(self) -> dict[str, str]:
        """Every route's state as clients see it (the console's swap markers follow it)."""
        return {name: route.state for name, route in self.routes.items()}

    def discovered(self, name: str) -> ModelRoute:
        """The route of a model some supervisor reports: the configured one, or (a model the
        config does not list) a managed route with the default balancing, made once."""
        route = self.routes.get(name)
        if route is None:
            # `model` only marks it managed: the gateway never launches anything.
            route = self.routes[name] = build_route(ServerConfig(name=name, model=name))
        return route

    @property
    def managed(self) -> list[ModelRoute]:
        return [r for r in self.routes.values() if r.managed]

    def report(self) -> GatewayReport:
        """In-flight requests per engine URL, and the draining engines out of rotation here.

        Built synchronously from one view of the table: a request picks a replica (and counts
        in `outstanding`) only from `replicas`, so once an engine is in `draining` its count here
        can only fall, and a 0 reported with it is final."""
        inflight: dict[str, int] = {}
        draining: list[str] = []
        for route in self.managed:
            for replica in route.replicas:
                inflight[replica.url] = inflight.get(replica.url, 0) + replica.outstanding
            for replica in route.draining:
                inflight[replica.url] = inflight.get(replica.url, 0) + replica.outstanding
                draining.append(replica.url)
        return GatewayReport(inflight=inflight, draining_seen=draining)

    @property
    def draining(self) -> bool:
        return any(route.draining for route in self.managed)

    def apply(self, status: ModelStatus) -> None:
        self.apply_merged(status.name, [status])

    def apply_merged(self, name: str, parts: Sequence[ModelStatus]) -> None:
        """One model as several nodes report it: every node's engines are replicas."""
        route = self.routes.get(name)
        if route is None or not route.managed:
            return
        upstreams = [url for part in parts for url in part.upstreams]
        draining = [url for part in parts for url in part.draining]
        keys = {url: p.api_key for p in parts for url in (*p.upstreams, *p.draining)}
        route.reported_state = merged_state([p.state for p in parts], bool(upstreams))
        events = {url: e for p in parts for url, e in p.kv_events.items()}
        route.set_upstreams(upstreams, draining, keys, events)


_STATE_RANK = ("ready", "draining", "starting", "stopping", "sleeping", "backoff", "failed")


def merged_state(states: Sequence[str], serving: bool) -> str:
    """One word for a model living on several nodes: ready when any node serves it, else the
    most hopeful of the nodes' states ("unknown" when no node has reported it)."""
    if len(states) == 1:
        return states[0]
    if serving:
        return "ready"
    ranked = sorted(states, key=lambda s: _STATE_RANK.index(s) if s in _STATE_RANK else 99)
    return ranked[0] if ranked else "unknown"


Ensure = Callable[[ModelRoute], Awaitable[None]]


class Router:
    """Finds the route for a request's model; a managed model with no serving replica is
    ensured first (through the supervisor link), until it serves or `ensure_timeout_s` ends.

    A configured model is never "not found": its route is built from config and never removed
    (a crash, a backoff or a FAILED model only change its state: the request is held by an
    ensure, or answered 503 with Retry-After). A model only a supervisor reports gets its route
    at that supervisor's first answer, so a name not in the table waits for every node's first
    answer (`discover`) before it is called unknown."""

    def __init__(
        self,
        table: RoutingTable,
        ensure: Ensure | None,
        count: Callable[[str], None],
        ensure_timeout_s: float,
        discover: Callable[[], Awaitable[None]] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.table = table
        self._tracing = tracing or Tracing(None)
        self._ensure = ensure
        self._count = count
        self._ensure_timeout_s = ensure_timeout_s
        self._discover = discover

    async def route(self, model: str) -> ModelRoute:
        route = self.table.get(model)
        if route is None and self._discover is not None:
            try:
                await asyncio.wait_for(self._discover(), self._ensure_timeout_s)
            except TimeoutError:
                why = f"no supervisor has said yet whether it serves `{model}`"
                raise Unavailable(why) from None
            route = self.table.get(model)
        if route is None:
            raise ModelNotFound(model)
        self._count(model)
        if route.managed and not route.serving:
            # The wait for a cold model, its swap included (the supervisor's spans join it).
            with self._tracing.span("ensure") as span:
                span.set_attribute("orchestra.model", model)
                span.set_attribute("orchestra.state", route.state)
                await self.make_serving(route)
        return route

    async def make_serving(self, route: ModelRoute) -> None:
        """Ensure until the route has a serving replica. More than one round happens when the
        model was drained again (another model's swap) before this request could use it."""
        if self._ensure is None:
            raise Unavailable(f"model `{route.name}` is managed but no supervisor is configured")
        deadline = time.monotonic() + self._ensure_timeout_s
        while True:
            await self._ensure(route)
            if route.serving:
                return
            if time.monotonic() >= deadline:
                raise Unavailable(f"model `{route.name}` is {route.state} with no ready upstream")
