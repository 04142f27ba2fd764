"""The routing table (from config, then the supervisor's word) and the router's ensure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestra.config import OrchestraConfig, ServerConfig, parse_config
from orchestra.gateway.control import ControlError, ModelStatus
from orchestra.gateway.errors import ModelNotFound, Unavailable, UpstreamTimeout
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.routing import Router, RoutingTable, build_route


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


def test_supervisor_lost_keeps_last_upstreams() -> None:
    table = RoutingTable(_config())
    table.apply(ModelStatus(name="hot", state="ready", upstreams=["http://a"]))
    table.supervisor_lost()
    assert table.routes["hot"].state == "unknown"
    assert [r.url for r in table.routes["hot"].replicas] == ["http://a"]
    assert table.routes["single"].state == "ready"


class StubControl:
    """Stands in for SupervisorClient.ensure: counts calls, answers after `release` is set."""

    def __init__(self, result: ModelStatus | ControlError) -> None:
        self.result = result
        self.calls = 0
        self.release = asyncio.Event()
        self.reports: list[dict[str, int]] = []

    async def report_demand(self, counts: dict[str, int], inflight: dict[str, int]) -> None:
        assert counts == {}, "ensure must not count requests twice"
        self.reports.append(inflight)

    async def ensure(self, model: str, timeout_s: float) -> ModelStatus:
        self.calls += 1
        await self.release.wait()
        if isinstance(self.result, ControlError):
            raise self.result
        return self.result


def _router(control: Any) -> Router:
    return Router(RoutingTable(_config()), control, GatewayMetrics(), ensure_timeout_s=5.0)


def test_unknown_model_is_model_not_found() -> None:
    router = _router(None)
    with pytest.raises(ModelNotFound):
        asyncio.run(router.route("gpt-9"))
    assert router.take_demand() == {}


def test_demand_is_counted_and_taken() -> None:
    router = _router(None)

    async def three() -> None:
        for name in ("single", "single", "pair"):
            await router.route(name)

    asyncio.run(three())
    assert router.take_demand() == {"single": 2, "pair": 1}
    assert router.take_demand() == {}


def test_managed_model_without_supervisor_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="no supervisor"):
        asyncio.run(_router(None).route("cold"))


def test_concurrent_requests_share_one_ensure() -> None:
    control = StubControl(ModelStatus(name="cold", state="ready", upstreams=["http://c1"]))
    router = _router(control)

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
    registry = router.metrics.registry
    assert registry.get_sample_value("orchestra_ensure_seconds_count", {"model": "cold"}) == 1
    # Ready now: the next request does not ensure again.
    asyncio.run(router.route("cold"))
    assert control.calls == 1


def test_ready_model_with_healthy_replica_skips_ensure() -> None:
    control = StubControl(ControlError(500, "must not be called"))
    router = _router(control)
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
        asyncio.run(_router(control).route("cold"))


def test_ensure_without_upstreams_is_unavailable() -> None:
    control = StubControl(ModelStatus(name="cold", state="failed", upstreams=[]))
    control.release.set()
    with pytest.raises(Unavailable, match="failed with no ready upstream"):
        asyncio.run(_router(control).route("cold"))


def test_failed_ensure_is_retried_by_the_next_request() -> None:
    control = StubControl(ControlError(0, "unreachable"))
    control.release.set()
    router = _router(control)
    for _ in range(2):
        with pytest.raises(Unavailable):
            asyncio.run(router.route("cold"))
    assert control.calls == 2


def test_ensure_first_tells_the_supervisor_what_is_in_flight() -> None:
    control = StubControl(ModelStatus(name="cold", state="ready", upstreams=["http://c1"]))
    control.release.set()
    router = _router(control)
    router.table.apply(ModelStatus(name="hot", state="ready", upstreams=["http://h"]))
    router.table.routes["hot"].replicas[0].outstanding = 2
    asyncio.run(router.route("cold"))
    assert control.reports == [{"single": 0, "pair": 0, "hot": 2, "cold": 0}]


def test_reensure_marks_the_new_upstreams_ready_or_reports_false() -> None:
    control = StubControl(ModelStatus(name="hot", state="ready", upstreams=["http://h"]))
    control.release.set()
    readied: list[str] = []
    router = Router(
        RoutingTable(_config()),
        control,
        GatewayMetrics(),
        ensure_timeout_s=5.0,
        on_ready=lambda route, replica: readied.append(f"{route.name} {replica.url}"),
    )
    route = router.table.routes["hot"]
    route.set_upstreams(["http://h"])
    route.replicas[0].healthy = False  # the proxy saw the connection refused
    assert asyncio.run(router.reensure(route)) is True
    assert readied == ["hot http://h"] and control.calls == 1

    control.result = ControlError(409, "no room")
    assert asyncio.run(router.reensure(route)) is False
