"""Ollama fallback: used when no vLLM replica can serve, OpenAI-shaped either way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess, free_port
from tests.fake_ollama import FakeOllamaProcess
from tests.faults.test_matrix import assert_openai_error, events

pytestmark = pytest.mark.timeout(60)
TAG = "llama3.2:1b"


@dataclass
class FallbackRig:
    gateway: GatewayProcess
    engine: FakeEngineProcess
    busy: FakeEngineProcess
    ollama: FakeOllamaProcess
    sdk: openai.OpenAI

    def fallbacks(self, model: str, reason: str) -> float:
        return self.gateway.metric("orchestra_fallback_total", model=model, reason=reason)


@pytest.fixture(scope="module")
def frig() -> Iterator[FallbackRig]:
    engine = FakeEngineProcess(name="fb").start()
    busy = FakeEngineProcess("--ttft-ms", "1500", name="fb-busy").start()
    ollama = FakeOllamaProcess(free_port(), [TAG]).start()
    config = {
        "servers": [
            {"name": "fb", "url": engine.url},
            {"name": "fb-busy", "url": busy.url, "max_inflight": 1, "max_queue": 0},
            {"name": "plain", "url": f"http://127.0.0.1:{free_port()}"},
        ],
        "gateway": fast_gateway_section(free_port(), retries={"budget_floor": 10_000}),
        "fallback": {
            "ollama": {
                "url": ollama.url,
                "models": {"fb": TAG, "fb-busy": TAG},
                "health_check_interval_s": 0.1,
                "idle_read_timeout_s": 1.0,
            }
        },
    }
    gateway = GatewayProcess(config).start()
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    try:
        yield FallbackRig(gateway, engine, busy, ollama, sdk)
    finally:
        sdk.close()
        gateway.stop()
        for proc in (engine, busy, ollama):
            proc.stop()


def _ollama_health(rig: FallbackRig) -> float:
    return rig.gateway.metric(
        "orchestra_upstream_healthy", model="_fallback", upstream=rig.ollama.url
    )


@pytest.fixture
def ollama_up(frig: FallbackRig) -> FallbackRig:
    frig.ollama.set_fault("none")
    wait_until(lambda: _ollama_health(frig) == 1.0, what="ollama up")
    return frig


@pytest.fixture
def down(ollama_up: FallbackRig) -> Iterator[FallbackRig]:
    """The vLLM upstream of `fb` answers 503 (with Retry-After) to everything."""
    ollama_up.engine.set_fault("503")
    yield ollama_up
    reset_engine(ollama_up.engine)


def test_vllm_serves_while_healthy(frig: FallbackRig) -> None:
    raw = frig.sdk.chat.completions.with_raw_response.create(
        model="fb", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert raw.headers["x-orchestra-backend"] == "vllm"
    assert raw.parse().choices[0].message.content == "tok0 tok1 tok2"


def test_chat_falls_back_to_ollama(down: FallbackRig) -> None:
    before = down.fallbacks("fb", "unavailable")
    raw = down.sdk.chat.completions.with_raw_response.create(
        model="fb", messages=[{"role": "user", "content": "hello there"}], max_tokens=4
    )
    assert raw.headers["x-orchestra-backend"] == "ollama"
    reply = raw.parse()
    assert reply.model == "fb" and reply.object == "chat.completion"
    assert reply.choices[0].message.content == "ol0 ol1 ol2 ol3"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.prompt_tokens == 2
    assert reply.usage.completion_tokens == 4 and reply.usage.total_tokens == 6
    sent = down.ollama.stats()["bodies"][-1]
    assert sent["model"] == TAG and sent["options"]["num_predict"] == 4
    assert down.fallbacks("fb", "unavailable") == before + 1


def test_stream_falls_back_with_usage(down: FallbackRig) -> None:
    stream = down.sdk.chat.completions.create(
        model="fb",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "ol0 ol1 ol2"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_completions_and_embeddings_fall_back(down: FallbackRig) -> None:
    reply = down.sdk.completions.create(model="fb", prompt="once upon", max_tokens=2)
    assert reply.choices[0].text == "ol0 ol1"
    assert down.ollama.stats()["bodies"][-1]["raw"] is True
    emb = down.sdk.embeddings.create(model="fb", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 4


def test_ollama_error_mid_stream_is_an_error_event(down: FallbackRig) -> None:
    down.ollama.set_fault("error-mid-stream", count=1)
    body = {"model": "fb", "messages": [{"role": "user", "content": "x"}], "stream": True}
    reply = httpx.post(down.gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert reply.status_code == 200
    parsed = events(reply.text)
    assert "[DONE]" not in parsed
    assert "an error was encountered" in assert_openai_error(parsed[-1])["message"]


def test_ollama_hang_mid_stream_is_bounded(down: FallbackRig) -> None:
    down.ollama.set_fault("hang-mid-stream", count=1)
    body = {"model": "fb", "messages": [{"role": "user", "content": "x"}], "stream": True}
    reply = httpx.post(down.gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert "sent nothing" in assert_openai_error(events(reply.text)[-1])["message"]


def test_ollama_down_leaves_the_original_error(down: FallbackRig) -> None:
    down.ollama.set_fault("version-down")
    wait_until(
        lambda: (
            down.gateway.metric(
                "orchestra_upstream_healthy", model="_fallback", upstream=down.ollama.url
            )
            == 0.0
        ),
        what="ollama down",
    )
    body = {"model": "fb", "messages": [{"role": "user", "content": "x"}]}
    reply = httpx.post(down.gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert reply.status_code == 503 and reply.headers["x-orchestra-backend"] == "vllm"
    assert_openai_error(reply.json())


def test_unmapped_model_gets_no_fallback(frig: FallbackRig) -> None:
    body = {"model": "plain", "messages": [{"role": "user", "content": "x"}]}
    reply = httpx.post(frig.gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert reply.status_code == 503
    assert assert_openai_error(reply.json())["code"] == "no_upstream_available"


def test_overload_beyond_the_queue_falls_back(ollama_up: FallbackRig) -> None:
    frig = ollama_up
    before = frig.fallbacks("fb-busy", "overloaded")
    body = {"model": "fb-busy", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    backends: list[str] = []

    def call() -> None:
        reply = httpx.post(frig.gateway.url + "/v1/chat/completions", json=body, timeout=10)
        assert reply.status_code == 200
        backends.append(reply.headers["x-orchestra-backend"])

    first = threading.Thread(target=call)
    first.start()
    wait_until(lambda: frig.busy.stats()["active"] == 1, what="first request in flight")
    call()
    first.join(10)
    assert sorted(backends) == ["ollama", "vllm"]
    assert frig.fallbacks("fb-busy", "overloaded") == before + 1


def test_requests_total_counts_each_request_once_with_the_status_the_client_got(
    down: FallbackRig,
) -> None:
    def requests(status: str) -> float:
        return down.gateway.metric("orchestra_requests_total", model="fb", status=status)

    body = {"model": "fb", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    before = {s: requests(s) for s in ("200", "503")}
    served = httpx.post(down.gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert served.status_code == 200 and served.headers["x-orchestra-backend"] == "ollama"
    assert requests("200") == before["200"] + 1
    assert requests("503") == before["503"], "the vLLM 503 that Ollama answered is not counted"

    down.ollama.set_fault("version-down")
    wait_until(lambda: _ollama_health(down) == 0.0, what="ollama down")
    refused = httpx.post(down.gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert refused.status_code == 503
    assert requests("503") == before["503"] + 1
    assert requests("200") == before["200"] + 1
