"""The link's nodes following Ray (`membership.py` over a fake Ray view), models learnt from
the supervisors (none listed in the gateway), and placement by Ray's free resources."""

from __future__ import annotations

import asyncio
from typing import Any

from orchestra.config import parse_config
from orchestra.control import ModelStatus
from orchestra.gateway.cluster.link import SupervisorLink
from orchestra.gateway.cluster.membership import RayMembership
from orchestra.gateway.cluster.nodes import Node, placement_order
from orchestra.gateway.cluster.ray_view import RaySupervisor
from orchestra.gateway.cluster.routing import Router, RoutingTable
from orchestra.gateway.metrics import GatewayMetrics

from .test_nodes import FakeSupervisor


def _ready(name: str, *urls: str) -> ModelStatus:
    return ModelStatus(name=name, state="ready", upstreams=list(urls))


class FakeView:
    """Stands for `RayView`: what Ray reports now."""

    def __init__(self) -> None:
        self.found: list[RaySupervisor] = []

    def read(self) -> list[RaySupervisor]:
        return list(self.found)


def _sup(node_id: str, address: str, **free: float) -> RaySupervisor:
    return RaySupervisor(node_id, address, f"http://{address}:8100", {}, dict(free))


def _empty_link(gone: list[set[str]] | None = None) -> SupervisorLink:
    table = RoutingTable(parse_config({}))  # the gateway lists no model
    return SupervisorLink(
        [],
        table,
        GatewayMetrics(),
        refresh_s=0.01,
        ensure_timeout_s=5.0,
        on_gone=(gone if gone is not None else []).append,
    )


def test_a_model_only_a_supervisor_knows_is_routed() -> None:
    link = _empty_link()
    sup = FakeSupervisor("a", [_ready("extra", "http://a:1"), ModelStatus(name="c", state="cold")])
    link.add_node(Node("a", sup))  # type: ignore[arg-type]
    asyncio.run(link.sync_once())
    route = link.table.routes["extra"]
    assert route.managed and [r.url for r in route.replicas] == ["http://a:1"]
    assert link.table.routes["c"].state == "cold"  # a cold one too: a request ensures it
    router = Router(link.table, link.ensure, link.count, 5.0)
    assert asyncio.run(router.route("extra")) is route


def test_nodes_follow_ray_arrival_death_and_rejoin() -> None:
    gone: list[set[str]] = []  # what the link told the pool to fail (`on_gone`)
    link = _empty_link(gone)
    view = FakeView()
    clients: dict[str, FakeSupervisor] = {}

    def client_for(url: str) -> Any:
        address = url.removeprefix("http://").split(":")[0]
        clients[url] = FakeSupervisor(address, [_ready("m", f"http://{address}:9000")])
        return clients[url]

    members = RayMembership(view, link, client_for, 0.01)  # type: ignore[arg-type]

    async def scenario() -> None:
        runner = asyncio.create_task(link.run())
        try:
            view.found = [_sup("h1", "10.0.0.1"), _sup("w1", "10.0.0.2", GPU=1)]
            await members.step()
            await _until(lambda: len(_urls(link)) == 2)
            assert [n.ray_free for n in link.nodes] == [{}, {"GPU": 1}]
            assert gone == []

            view.found = [_sup("h1", "10.0.0.1")]  # Ray marked the worker dead
            await members.step()
            assert _urls(link) == ["http://10.0.0.1:9000"]
            # ...and its engines' requests in flight are failed now, the survivor's are not
            assert gone == [{"http://10.0.0.2:9000"}]

            view.found = [_sup("h1", "10.0.0.1"), _sup("w2", "10.0.0.2")]  # rejoined, new id
            await members.step()
            await _until(lambda: len(_urls(link)) == 2)
            assert [n.name for n in link.nodes] == ["ray-10.0.0.1", "ray-10.0.0.2"]
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())


def test_placement_prefers_the_node_ray_says_has_the_gpus() -> None:
    one, two = (Node(n, FakeSupervisor(n, [])) for n in ("one", "two"))  # type: ignore[arg-type]
    one.ray_free, two.ray_free = {"GPU": 1.0}, {"GPU": 2.0}
    assert [n.name for n in placement_order([one, two], "m", gpus=2)] == ["two", "one"]
    assert [n.name for n in placement_order([one, two], "m", gpus=1)] == ["one", "two"]
    cpu_full, cpu_free = (Node(n, FakeSupervisor(n, [])) for n in ("full", "free"))  # type: ignore[arg-type]
    cpu_full.ray_free, cpu_free.ray_free = {"memory": 0.0}, {"memory": 2e9}
    assert [n.name for n in placement_order([cpu_full, cpu_free], "m")] == ["free", "full"]


def _urls(link: SupervisorLink) -> list[str]:
    route = link.table.get("m")
    return [r.url for r in route.replicas] if route else []


async def _until(predicate: Any) -> None:
    for _ in range(500):  # 5 s
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")
