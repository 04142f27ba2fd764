"""The gateway's side of the supervisors: one owner for everything the two exchange.

`SupervisorLink` owns one sync loop per node (every `gateway.routing_refresh_s`, faster while an
engine drains or an ensure is pending: report demand and in-flight requests for *that node's*
engines, read its model table back), merges the nodes' tables into the routing table (a model
on several nodes has every node's engines as replicas), and owns the ensure calls (concurrent
requests for one cold model share one; it goes to the nodes in `nodes.placement_order`, the next
one when a node cannot place it). It talks through the one control client,
`orchestra.control.ControlClient`, which sends each node's admin token. The gateway never
imports supervisor code.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence

from orchestra.control import ControlClient, ControlError, GatewayReport, ModelStatus

from ..balancing.balancer import Replica
from ..core.errors import Unavailable, UpstreamTimeout
from ..metrics import GatewayMetrics
from .nodes import Node, placement_order
from .routing import ModelRoute, RoutingTable

log = logging.getLogger(__name__)

_FAST_SYNC_S = 0.05  # while an engine drains or an ensure waits: the drain waits on our report
_NEXT_NODE = (0, 404, 409, 503)  # unreachable, not managed there, cannot place: ask the next


async def _no_probe(url: str) -> bool:
    return False


class SupervisorLink:
    def __init__(
        self,
        nodes: Sequence[Node],
        table: RoutingTable,
        metrics: GatewayMetrics,
        *,
        refresh_s: float,
        ensure_timeout_s: float,
        node_down_after_s: float = 5.0,
        probe: Callable[[str], Awaitable[bool]] = _no_probe,
        on_ready: Callable[[ModelRoute, Replica], None] = lambda route, replica: None,
        on_status: Callable[[ModelStatus], None] = lambda status: None,  # e.g. its adapters
        gpus_for: Callable[[str], int] = lambda model: 1,  # GPUs per engine (placement)
        # The engine URLs of a node gone for good: their requests in flight fail now (the
        # pool's `drop`) instead of when a read times out.
        on_gone: Callable[[set[str]], None] = lambda urls: None,
    ) -> None:
        self.nodes = list(nodes)
        self.table = table
        self.gateway_id = uuid.uuid4().hex  # one per gateway process (each worker its own)
        self._metrics = metrics
        self._refresh_s = refresh_s
        self._ensure_timeout_s = ensure_timeout_s
        self._down_after_s = node_down_after_s
        self._probe = probe
        self._on_ready = on_ready
        self._on_status = on_status
        self._gpus_for = gpus_for
        self._on_gone = on_gone
        self._ensuring: dict[str, asyncio.Future[None]] = {}
        self._first_syncs: dict[Node, asyncio.Future[None]] = {}  # shared by waiting requests
        self._members_changed = asyncio.Event()

    def ensuring(self) -> int:
        """Ensures in flight, one per model at most (joined)."""
        return len(self._ensuring)

    @property
    def client(self) -> ControlClient:
        """The first node's control client (the console and loading hints use it; with several
        nodes they see the first one listed; with `ray:`, before any has joined, ControlError)."""
        if not self.nodes:
            raise ControlError(0, "no supervisor has joined yet")
        return self.nodes[0].client

    # ---- demand ---------------------------------------------------------------------------------
    def count(self, model: str) -> None:
        """One request for `model`, told to every node that manages it (rotation decides)."""
        for node in self.nodes:
            if node.may_have(model):
                node.demand[model] += 1

    # ---- the sync loops -------------------------------------------------------------------------
    async def run(self) -> None:
        """One sync loop per node, following `add_node`/`remove_node`; a loop that fails fails
        this (its owner restarts it, `orchestra.loops.run_forever`)."""
        tasks: dict[Node, asyncio.Task[None]] = {}
        try:
            while True:
                self._members_changed.clear()
                for node in [n for n in tasks if n not in self.nodes]:
                    tasks.pop(node).cancel()
                for node in self.nodes:
                    if node not in tasks:
                        tasks[node] = asyncio.create_task(self._run_node(node))
                changed = asyncio.create_task(self._members_changed.wait())
                done, _ = await asyncio.wait(
                    {changed, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                for task in done - {changed}:
                    task.result()  # a node loop never returns: this raises its error
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    def _first_sync_done(self, node: Node) -> Callable[[asyncio.Future[None]], None]:
        def done(_: asyncio.Future[None]) -> None:
            self._first_syncs.pop(node, None)

        return done

    # ---- membership (Ray's view of the cluster, `membership.py`) -------------------------------
    def add_node(self, node: Node) -> None:
        self.nodes.append(node)
        self._members_changed.set()

    def remove_node(self, name: str) -> None:
        """A node gone for good (Ray marked it dead): its engines leave rotation now, and the
        requests in flight to them end now (`on_gone`), not at a read timeout: a node that
        vanished sends no FIN or RST. Ray's word is final here even if an engine there still
        answers (its raylet alone died): its supervisor is gone, and a node Ray has declared
        dead is indistinguishable from a partitioned one."""
        leaving = [n for n in self.nodes if n.name == name]
        self.nodes[:] = [n for n in self.nodes if n.name != name]
        self._members_changed.set()
        self._merge({m for n in leaving for m in n.statuses})
        urls = {u for n in leaving for u in n.urls()}
        if urls:
            self._on_gone(urls)

    async def _run_node(self, node: Node) -> None:
        while True:
            await self.sync_node(node)
            fast = self.table.draining or self._ensuring
            await asyncio.sleep(_FAST_SYNC_S if fast else self._refresh_s)

    async def sync_once(self) -> None:
        await asyncio.gather(*(self.sync_node(node) for node in self.nodes))

    async def first_answers(self) -> None:
        """Until every node has been asked once: before a node's first answer, a name the
        gateway's config lacks may still be a model that node serves (the start-up window in
        which such a model would be "not found"). One sync per node, shared by the requests
        that wait on it; each is bounded by the control client's timeout."""
        waits = []
        for node in self.nodes:
            if node.synced or not node.reachable:
                continue  # answered, or asked and silent: its table is as known as it gets
            pending = self._first_syncs.get(node)
            if pending is None:
                pending = self._first_syncs[node] = asyncio.ensure_future(self.sync_node(node))
                pending.add_done_callback(self._first_sync_done(node))
            waits.append(asyncio.shield(pending))
        await asyncio.gather(*waits)

    async def sync_node(self, node: Node) -> None:
        before = set(node.statuses)
        report = self._report_for(node)
        demand = dict(node.demand)
        node.demand.clear()
        report.demand = demand
        try:
            reply = await node.client.sync(self.gateway_id, report)
        except ControlError as exc:
            node.demand.update(demand)  # keep them for the next report
            await self._unanswered(node, exc)
        else:
            if not node.reachable or node.away:
                log.info("node %s (%s) answers again", node.name, node.client.base_url)
            node.answered(reply.models, reply.node)
            for status in reply.models:
                self._on_status(status)
        self._merge(before | set(node.statuses))

    def _report_for(self, node: Node) -> GatewayReport:
        """The table's report restricted to this node's engines (each supervisor drains only its
        own)."""
        full = self.table.report()
        mine = node.urls()
        return GatewayReport(
            inflight={u: n for u, n in full.inflight.items() if u in mine},
            draining_seen=[u for u in full.draining_seen if u in mine],
        )

    async def _unanswered(self, node: Node, exc: ControlError) -> None:
        if node.reachable:
            log.warning("cannot sync with node %s: %s", node.name, exc.message)
        node.reachable = False
        if time.monotonic() - node.last_ok < self._down_after_s:
            return
        urls = sorted(node.urls())
        answers = await asyncio.gather(*(self._probe(u) for u in urls))
        alive = {u for u, ok in zip(urls, answers, strict=True) if ok}
        if node.alive is None:
            node.down_since = time.monotonic()
            log.warning(
                "node %s is away; %d of its %d engines still answer and stay in rotation",
                node.name,
                len(alive),
                len(urls),
            )
        node.alive = alive

    def _merge(self, names: Collection[str]) -> None:
        """Re-merge the routes of `names` (the models one node's answer or silence touched:
        every route on every sync made the control plane's cost grow with nodes x models per
        sync, `bench/fleet.py`). A model a supervisor serves is routed even when the gateway's
        config lacks it."""
        synced = any(n.synced for n in self.nodes)
        for name in names:
            route = self.table.discovered(name) if synced else self.table.get(name)
            if route is None or not route.managed:
                continue
            parts = [v for n in self.nodes if (v := n.view(name)) is not None]
            if parts or synced:
                self.table.apply_merged(name, parts)

    # ---- ensure ---------------------------------------------------------------------------------
    async def ensure(self, route: ModelRoute) -> None:
        """Ask a node to make `route`'s model ready; joins an ensure under way."""
        pending = self._ensuring.get(route.name)
        if pending is None:
            pending = asyncio.ensure_future(self._ensure(route))
            self._ensuring[route.name] = pending
            pending.add_done_callback(lambda _: self._ensuring.pop(route.name, None))
        # shield: one waiter leaving (client gone) must not cancel the swap for the others.
        await asyncio.shield(pending)

    async def reensure(self, route: ModelRoute) -> bool:
        """Safety net after every replica of a managed model failed to connect (gone since the
        table was read): make it ready again. False when it cannot be."""
        try:
            await self.ensure(route)
        except (Unavailable, UpstreamTimeout):
            return False
        return True

    async def _ensure(self, route: ModelRoute) -> None:
        started = time.perf_counter()
        errors: list[str] = []
        for node in placement_order(self.nodes, route.name, self._gpus_for(route.name)):
            try:
                status = await node.client.ensure(route.name, self._ensure_timeout_s)
            except ControlError as exc:
                if exc.status == 504:
                    raise UpstreamTimeout(
                        f"model `{route.name}` did not become ready: {exc.message}"
                    ) from None
                if exc.status not in _NEXT_NODE:
                    raise Unavailable(
                        f"model `{route.name}` is not available: {exc.message}"
                    ) from None
                errors.append(f"{node.name}: {exc.message}")
                continue
            node.statuses[route.name] = status
            self._merge({route.name})
            for replica in route.replicas:  # the supervisor has just seen them answer /health
                self._on_ready(route, replica)
            self._metrics.ensure_seconds.labels(route.name).observe(time.perf_counter() - started)
            if not route.replicas:
                raise Unavailable(f"model `{route.name}` is {status.state} with no ready upstream")
            return
        why = "; ".join(errors) or "no reachable supervisor manages it"
        raise Unavailable(
            f"model `{route.name}` is not available: {why}",
            headers={"retry-after": str(max(1, math.ceil(self._down_after_s)))},
        )
