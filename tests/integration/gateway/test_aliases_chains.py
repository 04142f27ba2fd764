"""Aliases and fallback chains on a real gateway with fake engines: the client's model name is
kept, the next model of the chain serves when one cannot, and the answer says who served it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, FakeEngineProcess]]:
    with FakeEngineProcess(name="llama") as llama, FakeEngineProcess(name="qwen") as qwen:
        yield {"llama": llama, "qwen": qwen}


@pytest.fixture(scope="module")
def gateway(engines: dict[str, FakeEngineProcess]) -> Iterator[GatewayProcess]:
    config = {
        "gateway": fast_gateway_section(free_port(), retries={"max_attempts": 1}),
        "servers": [
            {"name": "llama", "url": engines["llama"].url, "max_inflight": 1},
            {"name": "qwen", "url": engines["qwen"].url},
            {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"},
            {"name": "gone", "url": f"http://127.0.0.1:{free_port()}"},
        ],
        "aliases": {"gpt-4o": "llama", "gpt-dead": "dead"},
        "fallbacks": {"llama": ["qwen"], "dead": ["llama"], "gone": ["dead"]},
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean(engines: dict[str, FakeEngineProcess], gateway: GatewayProcess) -> None:
    for engine in engines.values():
        reset_engine(engine)
    gateway.wait_ready("llama", "qwen")  # probed back after a previous test's fault


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0, timeout=10
    ) as sdk:
        yield sdk


def _fallbacks(gateway: GatewayProcess, src: str, dst: str, reason: str) -> float:
    labels = {"from_model": src, "to_model": dst, "reason": reason}
    return gateway.metric("orchestra_model_fallbacks_total", **labels)


def test_alias_serves_its_target(client: openai.OpenAI, engines: dict) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=2
    )
    reply = raw.parse()
    assert reply.model == "llama"
    assert raw.headers["x-orchestra-served-by"] == "llama"
    assert [r["model"] for r in engines["llama"].stats()["records"]] == ["llama"]


def test_next_in_chain_serves_when_the_model_fails(
    client: openai.OpenAI, gateway: GatewayProcess, engines: dict
) -> None:
    before = _fallbacks(gateway, "llama", "qwen", "http_503")
    engines["llama"].set_fault("503", count=1)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=2
    )
    assert raw.parse().model == "qwen"
    assert raw.headers["x-orchestra-served-by"] == "qwen"
    assert [r["model"] for r in engines["qwen"].stats()["records"]] == ["qwen"]
    assert _fallbacks(gateway, "llama", "qwen", "http_503") == before + 1


def test_overloaded_model_falls_back(
    client: openai.OpenAI, gateway: GatewayProcess, engines: dict[str, FakeEngineProcess]
) -> None:
    # llama admits one request at a time and queues none: while one is in flight, the next
    # request for it is served by qwen.
    before = _fallbacks(gateway, "llama", "qwen", "overloaded")
    engines["llama"].configure(ttft_ms=3000)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            client.chat.completions.create, model="llama", messages=MESSAGES, max_tokens=2
        )
        wait_until(lambda: engines["llama"].stats()["active"] == 1, what="llama busy")
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=2
        )
        assert raw.headers["x-orchestra-served-by"] == "qwen"
        assert slow.result(timeout=30).model == "llama"
    assert _fallbacks(gateway, "llama", "qwen", "overloaded") == before + 1


def test_chain_is_followed_depth_first(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    # gone -> dead (connection refused) -> llama; llama answers.
    raw = client.chat.completions.with_raw_response.create(
        model="gone", messages=MESSAGES, max_tokens=2
    )
    assert raw.headers["x-orchestra-served-by"] == "llama"
    assert _fallbacks(gateway, "gone", "llama", "http_503") >= 1


def test_streams_fall_back_before_the_first_byte(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    engines["llama"].set_fault("500", count=1)
    chunks = list(
        client.chat.completions.create(model="llama", messages=MESSAGES, max_tokens=3, stream=True)
    )
    assert {c.model for c in chunks} == {"qwen"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "tok0 tok1 tok2"
    )


def test_whole_chain_down_is_the_last_error(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    engines["llama"].set_fault("503", count=1)
    engines["qwen"].set_fault("503", count=1)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="llama", messages=MESSAGES, max_tokens=2)
    assert caught.value.status_code == 503


def test_client_errors_do_not_fall_back(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=[], max_tokens=2)
    assert [r for r in engines["qwen"].stats()["records"] if r["path"].startswith("/v1/")] == []


def test_models_lists_aliases(gateway: GatewayProcess) -> None:
    cards = {c["id"]: c for c in httpx.get(gateway.url + "/v1/models").json()["data"]}
    assert cards["gpt-4o"]["parent"] == "llama"
    assert cards["gpt-4o"]["kind"] == "alias"
    assert {"llama", "qwen", "dead", "gone"} <= set(cards)
