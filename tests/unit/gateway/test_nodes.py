"""Several supervisors behind one gateway: merged tables, reports per node, placement order,
and a node that stops answering."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestra.config import parse_config
from orchestra.control import ControlError, GatewayReport, ModelStatus, NodeLoad, SyncReply
from orchestra.gateway.cluster.link import SupervisorLink
from orchestra.gateway.cluster.nodes import Node, placement_order
from orchestra.gateway.cluster.routing import RoutingTable
from orchestra.gateway.core.errors import Unavailable
from orchestra.gateway.metrics import GatewayMetrics


class FakeSupervisor:
    """Answers sync with `models`/`load` (or raises `down`); ensure with `ensure_result`."""

    def __init__(self, name: str, models: list[ModelStatus], load: NodeLoad | None = None):
        self.base_url = f"http://{name}"
        self.models = models
        self.load = load or NodeLoad()
        self.down: ControlError | None = None
        self.reports: list[GatewayReport] = []
        self.ensure_result: ModelStatus | ControlError = ControlError(503, "no room")
        self.ensured: list[str] = []

    async def sync(self, gateway_id: str, report: GatewayReport) -> SyncReply:
        if self.down is not None:
            raise self.down
        self.reports.append(report.model_copy(deep=True))
        return SyncReply(models=self.models, node=self.load)

    async def ensure(self, model: str, timeout_s: float) -> ModelStatus:
        self.ensured.append(model)
        if isinstance(self.ensure_result, ControlError):
            raise self.ensure_result
        return self.ensure_result


def _table() -> RoutingTable:
    return RoutingTable(
        parse_config(
            {
                "servers": [{"name": "hot", "model": "/m/hot"}],
                "rotation_pool": [{"name": "cold", "model": "/m/cold"}],
            }
        )
    )


def _link(sups: list[FakeSupervisor], alive: set[str] | None = None, **kw: Any) -> SupervisorLink:
    async def probe(url: str) -> bool:
        return url in (alive or set())

    return SupervisorLink(
        [Node(s.base_url.removeprefix("http://"), s) for s in sups],  # type: ignore[arg-type]
        _table(),
        GatewayMetrics(),
        refresh_s=1.0,
        ensure_timeout_s=5.0,
        probe=probe,
        **kw,
    )


def _ready(name: str, *urls: str, key: str | None = None) -> ModelStatus:
    return ModelStatus(name=name, state="ready", upstreams=list(urls), api_key=key)


def _cold(name: str) -> ModelStatus:
    return ModelStatus(name=name, state="cold")


def test_a_model_on_two_nodes_has_both_nodes_engines_and_their_keys() -> None:
    a = FakeSupervisor("a", [_ready("hot", "http://10.0.0.1:8001", key="ka"), _cold("cold")])
    b = FakeSupervisor("b", [_ready("hot", "http://10.0.0.2:8001", key="kb"), _cold("cold")])
    link = _link([a, b])
    asyncio.run(link.sync_once())
    route = link.table.routes["hot"]
    assert [(r.url, r.api_key) for r in route.replicas] == [
        ("http://10.0.0.1:8001", "ka"),
        ("http://10.0.0.2:8001", "kb"),
    ]
    assert route.state == "ready" and link.table.routes["cold"].state == "cold"


def test_each_node_hears_only_about_its_own_engines() -> None:
    a = FakeSupervisor("a", [_ready("hot", "http://a:1")])
    b = FakeSupervisor("b", [_ready("hot", "http://b:1")])
    link = _link([a, b])
    asyncio.run(link.sync_once())
    link.table.routes["hot"].replicas[1].outstanding = 3
    link.count("hot")
    asyncio.run(link.sync_once())
    assert a.reports[-1].inflight == {"http://a:1": 0} and a.reports[-1].demand == {"hot": 1}
    assert b.reports[-1].inflight == {"http://b:1": 3} and b.reports[-1].demand == {"hot": 1}


def test_placement_prefers_room_then_fewest_resident_engines() -> None:
    full = Node("full", FakeSupervisor("full", []), load=NodeLoad(resident=1, free_slots=0))  # type: ignore[arg-type]
    busy = Node("busy", FakeSupervisor("busy", []), load=NodeLoad(resident=3, free_slots=2))  # type: ignore[arg-type]
    idle = Node("idle", FakeSupervisor("idle", []), load=NodeLoad(resident=1, free_slots=2))  # type: ignore[arg-type]
    for node in (full, busy, idle):
        node.synced, node.statuses = True, {"cold": _cold("cold")}
    assert [n.name for n in placement_order([full, busy, idle], "cold")] == ["idle", "busy", "full"]
    idle.reachable = False
    busy.statuses = {}
    assert [n.name for n in placement_order([full, busy, idle], "cold")] == ["full"]


def test_ensure_goes_to_the_next_node_when_one_cannot_place() -> None:
    a = FakeSupervisor("a", [_cold("cold")], NodeLoad(resident=0, free_slots=1))
    b = FakeSupervisor("b", [_cold("cold")], NodeLoad(resident=2, free_slots=1))
    a.ensure_result = ControlError(503, "no capacity")
    b.ensure_result = _ready("cold", "http://b:9")
    link = _link([a, b])
    asyncio.run(link.sync_once())
    asyncio.run(link.ensure(link.table.routes["cold"]))
    assert a.ensured == ["cold"] and b.ensured == ["cold"]
    assert [r.url for r in link.table.routes["cold"].replicas] == ["http://b:9"]


def test_no_node_can_place_is_503_with_retry_after() -> None:
    a = FakeSupervisor("a", [_cold("cold")])
    a.down = ControlError(0, "unreachable")
    link = _link([a])
    with pytest.raises(Unavailable) as info:
        asyncio.run(link.ensure(link.table.routes["cold"]))
    assert info.value.headers["retry-after"] == "5"


def test_a_silent_node_keeps_only_engines_that_answer_and_comes_back_whole() -> None:
    a = FakeSupervisor("a", [_ready("hot", "http://a:1", "http://a:2")])
    b = FakeSupervisor("b", [_ready("hot", "http://b:1")])
    link = _link([a, b], alive={"http://a:2"}, node_down_after_s=0.01)
    asyncio.run(link.sync_once())
    a.down = ControlError(0, "unreachable")
    link.nodes[0].last_ok -= 1.0  # silent for longer than node_down_after_s
    asyncio.run(link.sync_once())
    assert link.nodes[0].away
    assert [r.url for r in link.table.routes["hot"].replicas] == ["http://a:2", "http://b:1"]
    a.down = None
    asyncio.run(link.sync_once())
    assert not link.nodes[0].away
    assert len(link.table.routes["hot"].replicas) == 3


def test_a_brief_silence_keeps_every_engine() -> None:
    a = FakeSupervisor("a", [_ready("hot", "http://a:1")])
    link = _link([a], node_down_after_s=60)
    asyncio.run(link.sync_once())
    a.down = ControlError(0, "unreachable")
    asyncio.run(link.sync_once())
    route = link.table.routes["hot"]
    assert [r.url for r in route.replicas] == ["http://a:1"] and route.state == "unknown"
