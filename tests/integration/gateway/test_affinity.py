"""prefix_aware and session balancing through a real gateway onto two fake engines, and the
x-orchestra-overhead-ms header."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

PATH = "/v1/chat/completions"


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[FakeEngineProcess, FakeEngineProcess]]:
    args = ("--served-model-name", "px", "sess")
    with FakeEngineProcess(*args, name="a") as a, FakeEngineProcess(*args, name="b") as b:
        yield a, b


@pytest.fixture(scope="module")
def gateway(engines: tuple[FakeEngineProcess, FakeEngineProcess]) -> Iterator[GatewayProcess]:
    replicas = [{"url": e.url} for e in engines]
    config = {
        "gateway": fast_gateway_section(free_port()),
        "servers": [
            {"name": "px", "balancing": "prefix_aware", "replicas": replicas},
            {"name": "sess", "balancing": "session", "replicas": replicas},
        ],
    }
    with GatewayProcess(config) as gw:
        yield gw


def _served_by(engines: tuple[FakeEngineProcess, ...], prefix: str) -> dict[str, set[str]]:
    """request-id group (before the last '-') -> names of the engines that served it."""
    homes: dict[str, set[str]] = collections.defaultdict(set)
    for engine in engines:
        for record in engine.stats()["records"]:
            rid = record["x_request_id"] or ""
            if rid.startswith(prefix):
                homes[rid.rsplit("-", 1)[0]].add(engine.name)
    return homes


def test_prefix_aware_keeps_each_system_prompt_on_one_replica(
    gateway: GatewayProcess, engines: tuple[FakeEngineProcess, FakeEngineProcess]
) -> None:
    systems = [f"You are helper {i}; answer in the style of poet {i}. " * 20 for i in range(6)]
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        for turn in range(5):
            for i, system in enumerate(systems):
                body = {
                    "model": "px",
                    "max_tokens": 1,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": f"question {turn}"},
                    ],
                }
                reply = http.post(PATH, json=body, headers={"x-request-id": f"px{i}-{turn}"})
                assert reply.status_code == 200
    homes = _served_by(engines, "px")
    assert len(homes) == len(systems)
    assert all(len(names) == 1 for names in homes.values()), homes  # one replica per prompt
    assert set().union(*homes.values()) == {"a", "b"}  # and the prompts spread over both


def test_session_header_and_user_stick(
    gateway: GatewayProcess, engines: tuple[FakeEngineProcess, FakeEngineProcess]
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        for n in range(4):
            for s in range(8):
                body = {
                    "model": "sess",
                    "max_tokens": 1,
                    "messages": [{"role": "user", "content": "hi"}],
                }
                headers = {"x-session-id": f"conv{s}", "x-request-id": f"sh{s}-{n}"}
                assert http.post(PATH, json=body, headers=headers).status_code == 200
                body["user"] = f"user{s}"
                headers = {"x-request-id": f"su{s}-{n}"}
                assert http.post(PATH, json=body, headers=headers).status_code == 200
    for prefix in ("sh", "su"):
        homes = _served_by(engines, prefix)
        assert len(homes) == 8
        assert all(len(names) == 1 for names in homes.values()), homes
        assert set().union(*homes.values()) == {"a", "b"}


def test_overhead_header_and_histogram(gateway: GatewayProcess) -> None:
    body = {"model": "px", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        plain = http.post(PATH, json=body)
        with http.stream("POST", PATH, json={**body, "stream": True}) as streamed:
            chunks = list(streamed.iter_lines())
    assert plain.status_code == streamed.status_code == 200
    assert any("[DONE]" in line for line in chunks)
    for reply in (plain, streamed):
        overhead = float(reply.headers["x-orchestra-overhead-ms"])
        assert 0 <= overhead < 10_000
    count = gateway.metric("orchestra_gateway_overhead_seconds_count", model="px")
    assert count >= 2
