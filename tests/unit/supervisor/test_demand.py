"""Demand windows, last use, and the gateways' reports that drains wait on."""

from __future__ import annotations

import asyncio

from orchestra.control import GatewayReport
from orchestra.supervisor.demand import Demand
from orchestra.supervisor.gateways import GatewayReports


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_counts_slide_out_of_the_window() -> None:
    clock = Clock()
    d = Demand(window_s=60, clock=clock)
    d.record({"a": 5})
    clock.t += 30
    d.record({"a": 3, "b": 0})
    assert d.count("a") == 8 and d.count("b") == 0
    clock.t += 31
    assert d.count("a") == 3


def test_requests_and_touches_mark_use() -> None:
    clock = Clock()
    d = Demand(window_s=60, clock=clock)
    assert d.last_used("a") == float("-inf") and d.seconds_since_use("a") is None
    d.record({"a": 2})
    clock.t += 11
    assert d.seconds_since_use("a") == 11
    d.touch("a")
    assert d.last_used("a") == clock.t and d.count("a") == 2  # a touch is not a request


def test_drained_needs_every_live_gateway_to_have_seen_the_drain_with_nothing_in_flight() -> None:
    clock = Clock()
    reports = GatewayReports(ttl_s=10, clock=clock)
    url = "http://127.0.0.1:8001"
    assert reports.drained([url])  # no gateway at all: nothing can be in flight here
    reports.record("g1", GatewayReport(inflight={url: 0}))
    assert not reports.drained([url])  # g1 has not taken it out of rotation yet
    reports.record("g1", GatewayReport(inflight={url: 2}, draining_seen=[url]))
    reports.record("g2", GatewayReport(inflight={}, draining_seen=[url]))
    assert not reports.drained([url]) and reports.inflight([url]) == 2
    reports.record("g1", GatewayReport(inflight={url: 0}, draining_seen=[url]))
    assert reports.drained([url])

    # A gateway that stops syncing stops counting after ttl_s.
    reports.record("g3", GatewayReport(inflight={url: 1}, draining_seen=[url]))
    assert not reports.drained([url])
    clock.t += 11
    reports.record("g1", GatewayReport(inflight={url: 0}, draining_seen=[url]))
    reports.record("g2", GatewayReport(draining_seen=[url]))
    assert reports.drained([url]) and set(reports.live()) == {"g1", "g2"}


def test_wait_drained_wakes_on_a_report_and_gives_up_at_the_deadline() -> None:
    url = "http://127.0.0.1:8001"

    async def scenario() -> tuple[bool, bool]:
        reports = GatewayReports(ttl_s=10)
        reports.record("g1", GatewayReport(inflight={url: 1}, draining_seen=[url]))
        waiter = asyncio.create_task(reports.wait_drained([url], timeout_s=5))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        reports.record("g1", GatewayReport(inflight={url: 0}, draining_seen=[url]))
        drained = await asyncio.wait_for(waiter, 1)
        reports.record("g1", GatewayReport(inflight={url: 1}, draining_seen=[url]))
        gave_up = await reports.wait_drained([url], timeout_s=0.05)
        return drained, gave_up

    assert asyncio.run(scenario()) == (True, False)


def test_demand_holds_at_most_a_window_of_seconds_per_model_while_nobody_counts() -> None:
    """Reports every 0.1 s for 10 windows, no `count` read in between (nothing reads demand
    without rotation): the events stay within `ceil(window_s) + 1` per model, and the count
    is still the window's."""
    clock = Clock()
    d = Demand(window_s=60, clock=clock)
    for _ in range(6000):
        d.record({"a": 1, "b": 2})
        clock.t += 0.1
    held = d.bounded(models=2)
    assert held.size <= held.bound == 2 * 61
    assert held.size >= 2 * 50  # about one a second of the window: merged, not dropped
    assert 590 <= d.count("a") <= 610 and 1180 <= d.count("b") <= 1220


def test_reports_of_gateways_gone_are_dropped_and_capped() -> None:
    """Each gateway process names itself anew at each start: the reports of those that
    stopped syncing go at the next report, and no more than MAX_GATEWAYS are ever kept."""
    from orchestra.supervisor.gateways import MAX_GATEWAYS

    clock = Clock()
    reports = GatewayReports(ttl_s=10, clock=clock)
    for restart in range(100):
        reports.record(f"restarted-{restart}", GatewayReport())
        clock.t += 5
    assert reports.bounded().size == 3  # those synced within ttl_s: 10 s, 5 s apart
    for g in range(MAX_GATEWAYS + 50):  # more live gateways than the cap, all at once
        reports.record(f"live-{g}", GatewayReport())
    held = reports.bounded()
    assert held.size == held.bound == MAX_GATEWAYS
    assert f"live-{MAX_GATEWAYS + 49}" in reports.live() and "live-0" not in reports.live()
