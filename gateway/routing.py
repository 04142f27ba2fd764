"""Model -> replicas: the routing table, and the router that makes a cold model ready first.

The table is built from config. Unmanaged models (`url:`/`replicas:` with URLs) keep their
replicas for life; managed models get theirs from the supervisor's model table (READY upstreams).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from orchestra.config import BalancingPolicy, OrchestraConfig, ServerConfig
from orchestra.gateway.balancer import Balancer, Replica, make_balancer
from orchestra.gateway.balancing.key import NO_KEY, RequestKey
from orchestra.gateway.control import ControlError, ModelStatus, SupervisorClient
from orchestra.gateway.errors import ModelNotFound, Unavailable, UpstreamTimeout
from orchestra.gateway.metrics import GatewayMetrics


@dataclass(eq=False)
class ModelRoute:
    name: str
    managed: bool
    policy: BalancingPolicy
    replicas: list[Replica]
    balancer: Balancer = field(repr=False)
    # Managed: the supervisor's word for the model ("unknown" until it answers). What clients
    # see is `state`, which for unmanaged models is derived from replica health.
    reported_state: str = "ready"

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
    def state(self) -> str:
        if self.managed:
            return self.reported_state
        return "ready" if any(r.healthy for r in self.replicas) else "down"

    def set_upstreams(self, urls: list[str]) -> None:
        """Adopt the supervisor's READY upstreams, keeping counters of replicas that stay."""
        known = {r.url: r for r in self.replicas}
        self.replicas = [known.get(url) or Replica(url=url) for url in urls]


def build_route(server: ServerConfig) -> ModelRoute:
    if server.managed:
        replicas: list[Replica] = []
        state = "unknown"
    elif server.url:
        replicas, state = [Replica(url=server.url, weight=server.weight)], "ready"
    else:
        replicas = [Replica(url=r.url or "", weight=r.weight) for r in server.replicas or []]
        state = "ready"
    return ModelRoute(
        name=server.name,
        managed=server.managed,
        policy=server.balancing,
        replicas=replicas,
        balancer=make_balancer(server.balancing, server.affinity),
        reported_state=state,
    )


class RoutingTable:
    def __init__(self, config: OrchestraConfig) -> None:
        self.routes: dict[str, ModelRoute] = {s.name: build_route(s) for s in config.all_servers}

    def get(self, name: str) -> ModelRoute | None:
        return self.routes.get(name)

    @property
    def managed(self) -> list[ModelRoute]:
        return [r for r in self.routes.values() if r.managed]

    def inflight(self) -> dict[str, int]:
        """Requests this gateway has in flight, per model (reported to the supervisor)."""
        return {r.name: sum(x.outstanding for x in r.replicas) for r in self.routes.values()}

    def apply(self, status: ModelStatus) -> None:
        route = self.routes.get(status.name)
        if route is not None and route.managed:
            route.reported_state = status.state
            route.set_upstreams(status.upstreams)

    def supervisor_lost(self) -> None:
        # Keep the last known upstreams: engines may well be serving without their supervisor.
        for route in self.managed:
            route.reported_state = "unknown"


class Router:
    """Finds the route for a request's model; a cold managed model is ensured first.

    Concurrent requests for one cold model share a single ensure call. Before asking, the
    router tells the supervisor what is in flight right now, so the swap does not pick a victim
    that is serving this gateway's requests (the periodic demand report may be seconds old).
    """

    def __init__(
        self,
        table: RoutingTable,
        control: SupervisorClient | None,
        metrics: GatewayMetrics,
        ensure_timeout_s: float,
        on_ready: Callable[[ModelRoute, Replica], None] = lambda route, replica: None,
    ) -> None:
        self.table = table
        self.control = control
        self.metrics = metrics
        self.ensure_timeout_s = ensure_timeout_s
        self.on_ready = on_ready
        self.demand: collections.Counter[str] = collections.Counter()
        self._ensuring: dict[str, asyncio.Future[None]] = {}

    async def route(self, model: str) -> ModelRoute:
        route = self.table.get(model)
        if route is None:
            raise ModelNotFound(model)
        self.demand[model] += 1
        if route.managed and not any(r.healthy for r in route.replicas):
            await self._ensure(route)
        return route

    async def reensure(self, route: ModelRoute) -> bool:
        """After every replica of a managed model failed to connect (evicted or crashed since
        the table was read): make it ready again. False when it cannot be (the caller's own
        failure then stands)."""
        try:
            await self._ensure(route)
        except (Unavailable, UpstreamTimeout):
            return False
        return True

    async def _ensure(self, route: ModelRoute) -> None:
        if self.control is None:
            raise Unavailable(f"model `{route.name}` is managed but no supervisor is configured")
        pending = self._ensuring.get(route.name)
        if pending is None:
            pending = asyncio.ensure_future(self._do_ensure(route))
            self._ensuring[route.name] = pending
            pending.add_done_callback(lambda _: self._ensuring.pop(route.name, None))
        # shield: one waiter leaving (client gone) must not cancel the swap for the others.
        await asyncio.shield(pending)

    async def _do_ensure(self, route: ModelRoute) -> None:
        assert self.control is not None
        started = time.perf_counter()
        try:
            await self.control.report_demand({}, self.table.inflight())
        except ControlError:
            pass  # only a hint for victim choice; the ensure below reports real trouble
        try:
            status = await self.control.ensure(route.name, self.ensure_timeout_s)
        except ControlError as exc:
            if exc.status == 504:
                raise UpstreamTimeout(
                    f"model `{route.name}` did not become ready: {exc.message}"
                ) from None
            raise Unavailable(f"model `{route.name}` is not available: {exc.message}") from None
        self.table.apply(status)
        for replica in route.replicas:  # the supervisor has just seen them answer /health
            self.on_ready(route, replica)
        self.metrics.ensure_seconds.labels(route.name).observe(time.perf_counter() - started)
        if not route.replicas:
            raise Unavailable(f"model `{route.name}` is {status.state} with no ready upstream")

    def take_demand(self) -> dict[str, int]:
        counts, self.demand = dict(self.demand), collections.Counter()
        return counts
