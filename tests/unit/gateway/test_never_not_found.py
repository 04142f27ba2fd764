"""The router never calls a model "not found" while a supervisor may still report it (issue 31,
part 3): a name the table lacks waits for every node's first answer; a configured model that
has FAILED is a retryable 503, never a 404; an unknown name is still a 404."""

from __future__ import annotations

import asyncio

import pytest

from orchestra.control import ControlError
from orchestra.gateway.cluster.link import SupervisorLink
from orchestra.gateway.cluster.routing import ModelRoute, Router
from orchestra.gateway.core.errors import ModelNotFound, Unavailable

from .test_nodes import FakeSupervisor, _cold, _link, _ready


def _router(link: SupervisorLink) -> Router:
    return Router(link.table, link.ensure, link.count, 5.0, link.first_answers)


def test_a_reported_model_asked_before_the_first_sync_is_routed_not_404() -> None:
    a = FakeSupervisor("a", [_ready("hot", "http://a:1"), _ready("extra", "http://a:2")])
    link = _link([a])
    router = _router(link)

    async def three() -> list[ModelRoute]:
        return await asyncio.gather(*(router.route("extra") for _ in range(3)))

    routes = asyncio.run(three())  # no sync has run yet: `extra` is in no config
    assert {r.name for r in routes} == {"extra"}
    assert [r.url for r in routes[0].replicas] == ["http://a:2"]
    assert len(a.reports) == 1  # one first sync, shared by the three requests


def test_an_unknown_name_is_still_404_after_the_first_answer() -> None:
    a = FakeSupervisor("a", [_ready("hot", "http://a:1")])
    link = _link([a])
    with pytest.raises(ModelNotFound):
        asyncio.run(_router(link).route("nope"))
    assert len(a.reports) == 1


def test_a_silent_supervisor_does_not_hold_unknown_names() -> None:
    a = FakeSupervisor("a", [])
    a.down = ControlError(0, "unreachable")
    link = _link([a])
    router = _router(link)
    for _ in range(2):  # asked once; afterwards not asked again on the request's path
        with pytest.raises(ModelNotFound):
            asyncio.run(router.route("nope"))
    assert link.nodes[0].reachable is False


def test_a_failed_configured_model_is_a_retryable_503() -> None:
    a = FakeSupervisor("a", [_cold("hot")])
    a.ensure_result = ControlError(503, "hot#0 is FAILED (use load to retry)")
    link = _link([a])
    asyncio.run(link.sync_once())
    link.table.routes["hot"].reported_state = "failed"
    with pytest.raises(Unavailable) as info:
        asyncio.run(_router(link).route("hot"))
    assert info.value.status == 503 and info.value.headers["retry-after"] == "5"
