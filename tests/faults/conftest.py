"""Fixtures for the fault matrix: fake engines and one real gateway, shared per module.

Model `pair` has two replicas (A faulty, B healthy) to see failover; model `solo` has one (C) to
see what the client gets when nothing is left to fail over to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

FIRST_BYTE_S = 1.0
IDLE_READ_S = 1.0
KEEPALIVE_S = 0.5


@dataclass
class Rig:
    gateway: GatewayProcess
    a: FakeEngineProcess
    b: FakeEngineProcess
    c: FakeEngineProcess
    client: httpx.Client

    def chat(self, model: str, *, stream: bool = False, max_tokens: int = 4) -> httpx.Response:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens,
            "stream": stream,
        }
        return self.client.post("/v1/chat/completions", json=body)

    def _health_gauge(self, model: str, engine: FakeEngineProcess) -> float | None:
        labels = frozenset({"model": model, "upstream": engine.url}.items())
        key = ("orchestra_upstream_healthy", labels)
        return self.gateway.metrics().get(key)

    def healthy(self, model: str, engine: FakeEngineProcess) -> bool:
        """Taken for new requests (a replica never marked down has no gauge yet)."""
        return self._health_gauge(model, engine) in (None, 1.0)

    def down(self, model: str, engine: FakeEngineProcess) -> bool:
        return self._health_gauge(model, engine) == 0.0

    def engine_connections(self) -> int:
        """ESTABLISHED TCP connections from the gateway to any fake engine."""
        assert self.gateway.proc is not None
        ports = {self.a.port, self.b.port, self.c.port}
        conns = psutil.Process(self.gateway.proc.pid).net_connections(kind="tcp")
        return sum(
            1
            for conn in conns
            if conn.raddr and conn.raddr.port in ports and conn.status == psutil.CONN_ESTABLISHED
        )


def restart(engine: FakeEngineProcess) -> FakeEngineProcess:
    """The same engine again on its port (after a kill); returns the new process."""
    engine.stop()
    return FakeEngineProcess(*engine.args, name=engine.name, port=engine.port).start()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    a = FakeEngineProcess(name="pair").start()
    b = FakeEngineProcess(name="pair").start()
    c = FakeEngineProcess(name="solo").start()
    config = {
        "servers": [
            {"name": "pair", "replicas": [{"url": a.url}, {"url": b.url}]},
            {"name": "solo", "url": c.url},
        ],
        "gateway": fast_gateway_section(
            free_port(),
            timeouts={"first_byte_s": FIRST_BYTE_S, "idle_read_s": IDLE_READ_S},
            retries={"max_attempts": 3, "backoff_s": 0.0, "budget_floor": 10_000},
            upstream_keepalive_s=KEEPALIVE_S,
        ),
    }
    gateway = GatewayProcess(config).start()
    client = httpx.Client(base_url=gateway.url, timeout=15.0)
    the_rig = Rig(gateway, a, b, c, client)
    try:
        yield the_rig
    finally:
        client.close()
        gateway.stop()
        for engine in (the_rig.a, the_rig.b, the_rig.c):
            engine.stop()


@pytest.fixture
def fresh(rig: Rig) -> Iterator[Rig]:
    """The rig with faults cleared and every replica healthy again, before and after a test."""
    for engine in (rig.a, rig.b, rig.c):
        if engine.proc is None or engine.proc.poll() is not None:
            new = restart(engine)
            for name in ("a", "b", "c"):
                if getattr(rig, name) is engine:
                    setattr(rig, name, new)
    for engine in (rig.a, rig.b, rig.c):
        reset_engine(engine)
    for model, engine in (("pair", rig.a), ("pair", rig.b), ("solo", rig.c)):
        wait_until(lambda m=model, e=engine: rig.healthy(m, e), timeout=10, what="healthy")
    yield rig
