"""The routing table (from config, then the supervisor's word), the router, and the supervisor
link's ensure, sync and drain reports."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestra.config import OrchestraConfig, ServerConfig, parse_config
from orchestra.control import ControlError, GatewayReport, ModelStatus, SyncReply
from orchestra.gateway.cluster.link import SupervisorLink
from orchestra.gateway.cluster.nodes import Node
from orchestra.gateway.cluster.routing import Router, RoutingTable, build_route
from orchestra.gateway.core.errors import ModelNotFound, Unavailable, UpstreamTimeout
from orchestra.gateway.metrics import GatewayMetrics


def _config() -> OrchestraConfig:
    return parse_config(
        {
            "servers": [
                {"name": "single", "url": "http://127.0.0.1:9001/", "weight": 2},
                {
                    "name": "pair",
                    "balancing": "weighted",
                    "replicas": [
                        {"url": "http://127.0.0.1:9002", "weight": 3},
                        {"url": "http://127.0.0.1:9003"},
                    ],
                },
                {"name": "hot", "model": "/models/hot"},
            ],
            "rotation_pool": [{"name": "cold", "model": "/models/cold"}],
        }
    )


def test_table_is_built_from_config() -> None:
    table = RoutingTable(_config())
    assert list(table.routes) == ["single", "pair", "hot", "cold"]
    single = table.routes["single"]
    assert [(r.url, r.weight) for r in single.replicas] == [("http://127.0.0.1:9001", 2.0)]
    assert not single.managed and single.state == "ready"
    pair = table.routes["pair"]
    assert pair.policy == "weighted"
    assert [(r.url, r.weight) for r in pair.replicas] == [
        ("http://127.0.0.1:9002", 3.0),
        ("http://127.0.0.1:9003", 1.0),
    ]
    assert [r.name for r in table.managed] == ["hot", "cold"]
    assert table.routes["cold"].state == "unknown"
    assert table.routes["cold"].replicas == []
    assert table.get("nope") is None


def test_pick_skips_unhealthy_and_excluded() -> None:
    route = RoutingTable(_config()).routes["pair"]
    first, second = route.replicas
    assert route.pick(exclude=[first]) is second
    second.healthy = False
    assert route.pick() is first
    assert route.pick(exclude=[first]) is None
    first.healthy = False
    assert route.pick(panic=False) is None
    assert route.state == "down"


def test_pick_in_panic_tries_replicas_marked_down_once_each() -> None:
    route = RoutingTable(_config()).routes["pair"]
    first, second = route.replicas
    first.healthy = second.healthy = False
    tried = [route.pick()]
    tried.append(route.pick(exclude=tried))
    assert set(tried) == {first, second}  # every replica is down: each is tried anyway
    assert route.pick(exclude=tried) is None
    second.healthy = True
    assert route.pick(exclude=[second]) is None  # one is healthy again: no panic


def test_managed_status_is_the_supervisors_word() -> None:
    route = build_route(ServerConfig(name="m", model="/m"))
    assert route.managed and route.state == "unknown"
    route.reported_state = "sleeping"
    assert route.state == "sleeping"


def test_apply_adopts_upstreams_and_keeps_counters() -> None:
    table = RoutingTable(_config())
    table.apply(ModelStatus(name="hot", state="ready", upstreams=["http://a", "http://b"]))
    hot = table.routes["hot"]
    assert hot.state == "ready"
    kept = hot.replicas[1]
    kept.outstanding = 4
    table.apply(ModelStatus(name="hot", state="ready", upstreams=["http://b", "http://c"]))
    assert [r.url for r in hot.replicas] == ["http://b", "http://c"]
    assert hot.replicas[0] is kept and kept.outstanding == 4


def test_apply_ignores_unknown_and_unmanaged_models() -> None:
    table = RoutingTable(_config())
    table.apply(ModelStatus(name="ghost", state="ready", upstreams=["http://x"]))
    table.apply(ModelStatus(name="single", state="failed", upstreams=[]))
    assert "ghost" not in table.routes
    assert [r.url for r in table.routes["single"].replicas] == ["http://127.0.0.1:9001"]
    assert table.routes["single"].state == "ready"


class StubControl:
    """Stands in for ControlClient: counts ensure calls (answered once `release` is set) and
    records sync reports, answering them with `table`."""

    base_url = "http://supervisor"

    def __init__(self, result: ModelStatus | ControlError) -> None:
        self.result = result
        self.calls = 0
        self.release = asyncio.Event()
        self.reports: list[GatewayReport] = []
        self.table: list[ModelStatus] = []

    async def sync(self, gateway_id: str, report: GatewayReport) -> SyncReply:
        self.reports.append(report.model_copy(deep=True))
        return SyncReply(models=self.table)

    async def ensure(self, model: str, timeout_s: float) -> ModelStatus:
        self.calls += 1
        await self.release.wait()
        if isinstance(self.result, ControlError):
            raise self.result
        return self.result


def _link(control: Any, table: RoutingTable | None = None, **kw: Any) -> SupervisorLink:
    return SupervisorLink(
        [Node("local", control)],
        table or RoutingTable(_config()),
        GatewayMetrics(),
        refresh_s=1.0,
        ensure_timeout_s=5.0,
        **kw,
    )


def _router(control: Any) -> tuple[Router, SupervisorLink | None]:
    table = RoutingTable(_config())
    if control is None:
        return Router(table, None, lambda model: None, 5.0), None
    link = _link(control, table)
    return Router(table, link.ensure, link.count, 5.0), link


def test_unknown_model_is_model_not_found() -> None:
    router, _ = _router(None)
    with pytest.raises(ModelNotFound):
        asyncio.run(router.route("gpt-9"))


def test_demand_is_counted_and_sent_with_the_next_sync() -> None:
    control = StubControl(ControlError(500, "unused"))
    router, link = _router(control)
    assert link is not None
    router.table.apply(ModelStatus(name="hot", state="ready", upstreams=["http://h"]))

    async def scenario() -> None:
        for name in ("single", "single", "pair", "hot"):
            await router.route(name)
        await link.sync_once()
        await link.sync_once()

    asyncio.run(scenario())
    assert [r.demand for r in control.reports] == [{"single": 2, "pair": 1, "hot": 1}, {}]


def test_demand_survives_an_unreachable_supervisor() -> None:
    control = StubControl(ControlError(500, "unused"))
    link = _link(control)
    calls = 0

    async def failing_sync(gateway_id: str, report: GatewayReport) -> SyncReply:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ControlError(0, "unreachable")
        return await StubControl.sync(control, gateway_id, report)

    control.sync = failing_sync  # type: ignore[method-assign]
    link.count("hot")
    link.nodes[0].statuses["hot"] = ModelStatus(name="hot", state="ready", upstreams=["http://h"])
    asyncio.run(link.sync_once())
    assert link.table.routes["hot"].state == "unknown"  # supervisor lost, upstreams kept
    assert [r.url for r in link.table.routes["hot"].replicas] == ["http://h"]
    asyncio.run(link.sync_once())
    assert control.reports[0].demand == {"hot": 1}


def test_managed_model_without_supervisor_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="no supervisor"):
        asyncio.run(_router(None)[0].route("cold"))


def test_concurrent_requests_share_one_ensure() -> None:
    control = StubControl(ModelStatus(name="cold", state="ready", upstreams=["http://c1"]))
    router, link = _router(control)
    assert link is not None

    async def scenario() -> list[str]:
        waiters = [asyncio.create_task(router.route("cold")) for _ in range(5)]
        await asyncio.sleep(0)
        waiters[0].cancel()  # one client leaves: the swap goes on for the others
        control.release.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        return [r.name for r in results[1:] if not isinstance(r, BaseException)]

    assert asyncio.run(scenario()) == ["cold"] * 4
    assert control.calls == 1
    route = router.table.routes["cold"]
    assert [r.url for r in route.replicas] == ["http://c1"]
    registry = link._metrics.registry
    assert registry.get_sample_value("orchestra_ensure_seconds_count", {"model": "cold"}) == 1
    # Ready now: the next request does not ensure again.
    asyncio.run(router.route("cold"))
    assert control.calls == 1


def test_ready_model_with_healthy_replica_skips_ensure() -> None:
    control = StubControl(ControlError(500, "must not be called"))
    router, _ = _router(control)
    router.table.apply(ModelStatus(name="hot", state="ready", upstreams=["http://h"]))
    assert asyncio.run(router.route("hot")).name == "hot"
    assert control.calls == 0


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ControlError(504, "still loading"), UpstreamTimeout),
        (ControlError(409, "no GPU free"), Unavailable),
        (ControlError(0, "unreachable"), Unavailable),
    ],
)
def test_ensure_failures_map_to_gateway_errors(
    error: ControlError, expected: type[Exception]
) -> None:
    control = StubControl(error)
    control.release.set()
    with pytest.raises(expected, match=error.message):
        asyncio.run(_router(control)[0].route("cold"))


def test_ensure_without_upstreams_is_unavailable() -> None:
    control = StubControl(ModelStatus(name="cold", state="failed", upstreams=[]))
    control.release.set()
    with pytest.raises(Unavailable, match="failed with no ready upstream"):
        asyncio.run(_router(control)[0].route("cold"))


def test_failed_ensure_is_retried_by_the_next_request() -> None:
    control = StubControl(ControlError(0, "unreachable"))
    control.release.set()
    router, _ = _router(control)
    for _ in range(2):
        with pytest.raises(Unavailable):
            asyncio.run(router.route("cold"))
    assert control.calls == 2


def test_draining_engine_leaves_rotation_and_its_inflight_is_reported_until_dropped() -> None:
    table = RoutingTable(_config())
    table.apply(ModelStatus(name="hot", state="ready", upstreams=["http://h"]))
    route = table.routes["hot"]
    replica = route.pick()
    assert replica is not None
    replica.outstanding = 2  # two requests in flight on it
    report = table.report()
    assert report.inflight["http://h"] == 2 and report.draining_seen == []

    # The supervisor marks it draining: no new request picks it, its count is still reported.
    table.apply(ModelStatus(name="hot", state="draining", upstreams=[], draining=["http://h"]))
    assert route.pick() is None and not route.serving and table.draining
    report = table.report()
    assert report.inflight["http://h"] == 2 and report.draining_seen == ["http://h"]
    replica.outstanding = 0
    assert table.report().inflight["http://h"] == 0

    # Stopped: the supervisor drops it; a restart on the same URL is a fresh rotation member.
    table.apply(ModelStatus(name="hot", state="cold"))
    assert route.replicas == [] and route.draining == [] and not table.draining
    table.apply(ModelStatus(name="hot", state="ready", upstreams=["http://h"]))
    assert route.pick() is not None


def test_a_model_drained_again_before_use_is_ensured_again() -> None:
    """Two models sharing one slot: right after an ensure answers, the other model's swap may
    mark this one draining before the request picks a replica. The router ensures again."""
    table = RoutingTable(_config())
    answers = [
        ModelStatus(name="cold", state="ready", upstreams=["http://c1"]),
        ModelStatus(name="cold", state="ready", upstreams=["http://c2"]),
    ]
    calls = 0

    async def ensure(route: Any) -> None:
        nonlocal calls
        calls += 1
        table.apply(answers.pop(0))
        if calls == 1:  # a sync lands before the request could pick: drained again
            table.apply(ModelStatus(name="cold", state="draining", draining=["http://c1"]))

    router = Router(table, ensure, lambda model: None, 5.0)
    route = asyncio.run(router.route("cold"))
    assert calls == 2 and [r.url for r in route.replicas] == ["http://c2"]


def test_reensure_marks_the_new_upstreams_ready_or_reports_false() -> None:
    control = StubControl(ModelStatus(name="hot", state="ready", upstreams=["http://h"]))
    control.release.set()
    readied: list[str] = []
    link = _link(
        control, on_ready=lambda route, replica: readied.append(f"{route.name} {replica.url}")
    )
    route = link.table.routes["hot"]
    route.set_upstreams(["http://h"])
    route.replicas[0].healthy = False  # the proxy saw the connection refused
    assert asyncio.run(link.reensure(route)) is True
    assert readied == ["hot http://h"] and control.calls == 1

    control.result = ControlError(409, "no room")
    assert asyncio.run(link.reensure(route)) is False
