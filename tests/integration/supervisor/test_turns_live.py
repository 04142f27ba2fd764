"""The swap scheduler on a real supervisor and fake engines (a start of 0.4 s, a wake of 0.2 s):
three models share one slot (max_resident 1). A stand-in gateway syncs every 50 ms, reporting
the requests it says are in flight and taking draining engines out of rotation, so the drain
and the quantum see what a gateway would report. Timings are asserted with wide margins."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from orchestra.protocol import GatewayReport
from orchestra.supervisor.manager import Manager

from .helpers import make_config, run, running, server, until

FAKE = ("--startup-delay", "0.4", "--sleep-delay", "0.1", "--wake-delay", "0.2")


def _config(tmp: Path, quantum_s: float, max_wait_s: float) -> Any:
    return make_config(
        tmp,
        [server("a", tmp, *FAKE, sleep_mode=True)],
        pool=[server(n, tmp, *FAKE, sleep_mode=True) for n in ("b", "c")],
        supervisor={
            "max_resident": 1,
            "swap_quantum_s": quantum_s,
            "swap_max_wait_s": max_wait_s,
            "swap_idle_s": 0.5,
            "swap_quantum_ratio": 0,  # the quantum is swap_quantum_s, measured or not
            "drain_timeout_s": 10,
        },
    )


@contextlib.asynccontextmanager
async def gateway(manager: Manager, inflight: dict[str, int]) -> AsyncIterator[None]:
    """Reports `inflight` (model -> requests on its ready engines) every 50 ms; a draining
    model's requests are taken as finished (it is out of rotation at once)."""

    async def loop() -> None:
        while True:
            report = GatewayReport()
            for m in manager.models.values():
                urls = [e.url for e in m.ready()]
                if m.draining:
                    report.draining_seen += urls
                elif urls:
                    report.inflight[urls[0]] = inflight.get(m.name, 0)
            manager.sync("test-gateway", report)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _ready(manager: Manager, name: str) -> bool:
    return bool(manager.models[name].serving())


async def _warm(manager: Manager) -> None:
    """Start b and c once (idle swaps: at once), then a again: b and c sleep, so the swaps
    timed below are wakes, not a cold start of a Python process on a busy machine."""
    await until(lambda: _ready(manager, "a"), what="a ready")
    for name in ("b", "c", "a"):
        await manager.ensure(name, 30)


def test_a_busy_resident_serves_its_quantum_before_the_swap(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(_config(tmp_path, quantum_s=2.5, max_wait_s=30)) as (_, manager):
            await _warm(manager)  # a has just been woken: its quantum begins
            load = {"a": 3}
            async with gateway(manager, load):
                began = time.monotonic()
                b = asyncio.create_task(manager.ensure("b", 30))
                await asyncio.sleep(1.0)
                assert _ready(manager, "a") and not b.done()  # a serves its queue
                assert manager.placer.turns.waiting().keys() == {"b"}
                await b
                waited = time.monotonic() - began
                # a's 2.5 s quantum counted from its wake, just before; then a sleep and a wake.
                assert 1.0 < waited < 6.0, waited
                assert manager.models["a"].state.value == "sleeping"
                # An idle resident (nothing in flight, not asked for in swap_idle_s) is evicted
                # at once.
                load.clear()
                await asyncio.sleep(0.6)
                began = time.monotonic()
                await manager.ensure("c", 30)
                assert time.monotonic() - began < 2.0

    run(scenario())


def test_the_wait_bound_evicts_mid_quantum_and_the_older_swap_goes_first(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running(_config(tmp_path, quantum_s=20, max_wait_s=2.0)) as (_, manager):
            await _warm(manager)
            async with gateway(manager, {"a": 2, "b": 2, "c": 2}):
                began = time.monotonic()
                b = asyncio.create_task(manager.ensure("b", 30))
                await asyncio.sleep(0.3)
                c = asyncio.create_task(manager.ensure("c", 30))
                await b
                took_b = time.monotonic() - began
                assert not c.done()
                assert 1.8 < took_b < 5.0, took_b  # the 2 s bound, then a drain and a start
                await c
                took_c = time.monotonic() - began
                # c began waiting at 0.3 s: its own 2 s bound passed while b was swapped in.
                assert took_c < took_b + 4.0, (took_b, took_c)
                assert _ready(manager, "c") and not _ready(manager, "b")

    run(scenario())


def test_quantum_zero_swaps_on_arrival(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(_config(tmp_path, quantum_s=0, max_wait_s=30)) as (_, manager):
            await _warm(manager)
            async with gateway(manager, {"a": 5}):
                began = time.monotonic()
                await manager.ensure("b", 30)
                assert time.monotonic() - began < 2.0

    run(scenario())
