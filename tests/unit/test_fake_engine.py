"""The fake vLLM engine (tests/fake_engine.py), driven as a subprocess with the official SDK."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fake_engine import FakeEngineProcess

VLLM_FLAGS = (
    "--tensor-parallel-size",
    "1",
    "--max-model-len",
    "4096",
    "--dtype",
    "bfloat16",
    "--gpu-memory-utilization",
    "0.5",
    "--enforce-eager",
    "--some-future-flag",
    "x",
)
USER = [{"role": "user", "content": "Say something please"}]


def get(url: str, timeout: float = 2) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def post(url: str, payload: dict[str, Any] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(payload or {}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read()


def wait_for(cond: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    args = ("--enable-sleep-mode", "--sleep-delay", "0.05", "--wake-delay", "0.05", *VLLM_FLAGS)
    with FakeEngineProcess(*args) as e:
        yield e


@pytest.fixture
def client(engine: FakeEngineProcess) -> Iterator[openai.OpenAI]:
    engine.set_fault("none")
    with openai.OpenAI(base_url=engine.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def paced() -> Iterator[FakeEngineProcess]:
    """20 tokens/s per stream, at most one request generating at a time."""
    with FakeEngineProcess("--token-rate", "20", "--max-running", "1", name="paced") as e:
        yield e


def test_chat_non_stream_and_request_id(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="fake-model", messages=USER, max_tokens=3, extra_headers={"x-request-id": "rid-1"}
    )
    assert raw.headers["x-request-id"] == "rid-1"
    resp = raw.parse()
    assert resp.object == "chat.completion" and resp.model == "fake-model"
    assert resp.choices[0].message.content == "tok0 tok1 tok2"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (3, 3)
    assert resp.usage.total_tokens == 6


def test_chat_paris_and_default_max_tokens(client: openai.OpenAI) -> None:
    q = [{"role": "user", "content": "What is the capital of France?"}]
    resp = client.chat.completions.create(model="fake-model", messages=q)
    assert resp.choices[0].message.content == "The capital of France is Paris."
    assert resp.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model="fake-model", messages=q, max_tokens=2)
    assert (short.choices[0].message.content, short.choices[0].finish_reason) == (
        "The capital",
        "length",
    )
    plain = client.chat.completions.create(model="fake-model", messages=USER)
    assert plain.usage is not None and plain.usage.completion_tokens == 16


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    with client.chat.completions.create(
        model="fake-model",
        messages=USER,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert len(chunks) == 1 + 4 + 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_completions(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="fake-model", prompt="one two", max_tokens=2)
    assert resp.object == "text_completion" and resp.choices[0].text == "tok0 tok1"
    assert resp.usage is not None and resp.usage.prompt_tokens == 2
    with client.completions.create(
        model="fake-model", prompt="one two", max_tokens=3, stream=True
    ) as stream:
        texts = [c.choices[0].text for c in stream]
    assert texts == ["tok0", " tok1", " tok2"]


def test_embeddings_models_and_wrong_model(client: openai.OpenAI) -> None:
    emb = client.embeddings.create(model="fake-model", input=["a b", "c"])  # SDK asks for base64
    floats = client.embeddings.create(model="fake-model", input="a b", encoding_format="float")
    assert [len(d.embedding) for d in emb.data] == [8, 8]
    assert emb.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-5)
    assert emb.usage.prompt_tokens == 3
    models = client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    assert models.data[0].owned_by == "vllm"
    assert models.data[0].model_extra and models.data[0].model_extra["max_model_len"] == 4096
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="nope", messages=USER)
    assert exc.value.body == {
        "message": "The model `nope` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }


def test_sleep_and_wake(engine: FakeEngineProcess, client: openai.OpenAI) -> None:
    assert json.loads(get(engine.url + "/is_sleeping")[1]) == {"is_sleeping": False}
    assert post(engine.url + "/sleep?level=1")[0] == 200
    assert json.loads(get(engine.url + "/is_sleeping")[1]) == {"is_sleeping": True}
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="fake-model", messages=USER)
    assert exc.value.status_code == 503
    assert post(engine.url + "/wake_up")[0] == 200
    assert json.loads(get(engine.url + "/is_sleeping")[1]) == {"is_sleeping": False}
    assert client.chat.completions.create(model="fake-model", messages=USER).choices


def test_sleep_routes_absent_without_flag(paced: FakeEngineProcess) -> None:
    assert get(paced.url + "/is_sleeping")[0] == 404


def test_error_faults(engine: FakeEngineProcess, client: openai.OpenAI) -> None:
    engine.set_fault("500", count=1)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fake-model", messages=USER)
    assert client.chat.completions.create(model="fake-model", messages=USER).choices
    engine.set_fault("503", count=1)
    with pytest.raises(openai.InternalServerError) as exc:
        client.completions.create(model="fake-model", prompt="x")
    assert exc.value.response.headers["retry-after"] == "1"
    engine.set_fault("error", status=502)
    with pytest.raises(openai.InternalServerError) as exc:
        client.completions.create(model="fake-model", prompt="x")
    assert exc.value.status_code == 502


def test_cut_mid_stream(engine: FakeEngineProcess, client: openai.OpenAI) -> None:
    engine.set_fault("cut-mid-stream", count=1)
    got = []
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        with client.chat.completions.create(
            model="fake-model", messages=USER, max_tokens=8, stream=True
        ) as stream:
            got.extend(stream)
    assert len(got) == 2


def test_hang_times_out_and_counts_cancelled(
    engine: FakeEngineProcess, client: openai.OpenAI
) -> None:
    before = engine.stats()["cancelled"]
    engine.set_fault("hang", count=1)
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(model="fake-model", messages=USER)
    wait_for(lambda: engine.stats()["cancelled"] == before + 1)


def test_no_done_and_malformed(engine: FakeEngineProcess) -> None:
    body = {"model": "fake-model", "prompt": "x", "max_tokens": 3, "stream": True}
    with httpx.Client(base_url=engine.url) as http:
        engine.set_fault("no-done", count=1)
        lines = http.post("/v1/completions", json=body).text.split("\n\n")
        assert lines[-2].startswith("data: {") and "[DONE]" not in lines[-2]
        engine.set_fault("malformed", count=2)
        assert 'data: {"id": "broken", "choices": [' in http.post("/v1/completions", json=body).text
        resp = http.post("/v1/completions", json={**body, "stream": False})
        assert resp.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            resp.json()


def test_metrics_queueing_and_stream_cancel(paced: FakeEngineProcess) -> None:
    body = {"model": "paced", "prompt": "x", "max_tokens": 8}  # 7 gaps of 50 ms each
    with httpx.Client(base_url=paced.url, timeout=5) as http:
        workers = [
            threading.Thread(target=http.post, args=("/v1/completions",), kwargs={"json": body})
            for _ in range(2)
        ]
        for w in workers:
            w.start()

        def metric(name: str) -> float:
            for line in http.get("/metrics").text.splitlines():
                if line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
            raise AssertionError(name)

        wait_for(lambda: metric("vllm:num_requests_waiting") == 1)
        assert metric("vllm:num_requests_running") == 1
        for w in workers:
            w.join()
        assert metric("vllm:num_requests_running") == 0
        assert metric("vllm:generation_tokens_total") == 16

        before = paced.stats()
        with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as resp:
            lines = resp.iter_lines()
            assert next(lines).startswith("data: ")
        wait_for(lambda: paced.stats()["cancelled"] == before["cancelled"] + 1)
        stats = paced.stats()
        assert stats["active"] == 0 and stats["completed"] == before["completed"]
        assert stats["records"][-1]["outcome"] == "cancelled"
        assert stats["by_path"]["/v1/completions"] == 3


def test_startup_delay_then_ready() -> None:
    e = FakeEngineProcess("--startup-delay", "0.8").start(wait_ready=False)
    try:
        with pytest.raises(urllib.error.URLError) as exc:
            get(e.url + "/health")
        assert isinstance(exc.value.reason, ConnectionRefusedError)
        wait_for(e.healthy, timeout=5)
        assert get(e.url + "/health") == (200, b"")
    finally:
        e.stop()
    assert e.proc is not None and e.proc.returncode == 0  # SIGTERM exits 0
    assert "INFO: fake engine fake-model listening on 127.0.0.1:" in e.output()


def test_fail_start_exit_after_and_crash() -> None:
    failing = FakeEngineProcess("--fail-start")
    with pytest.raises(RuntimeError, match="Engine core initialization failed"):
        failing.start()
    failing.stop()
    assert failing.wait() == 1
    with FakeEngineProcess("--exit-after", "0.3") as dying:
        assert dying.wait(timeout=5) == 3
    with FakeEngineProcess("--fail-rate", "0.5") as crashy:
        with openai.OpenAI(base_url=crashy.url + "/v1", api_key="x", max_retries=0) as c:
            assert c.completions.create(model="fake-model", prompt="x").choices
            with pytest.raises(openai.InternalServerError):
                c.completions.create(model="fake-model", prompt="x")
            crashy.set_fault("crash-mid-stream")
            with pytest.raises((httpx.HTTPError, openai.APIError)):
                with c.completions.create(model="fake-model", prompt="x", stream=True) as s:
                    list(s)
        assert crashy.wait(timeout=5) == 1


def test_ignore_sigterm() -> None:
    with FakeEngineProcess("--ignore-sigterm") as e:
        assert e.proc is not None
        e.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert e.proc.poll() is None and e.healthy()
        e.proc.kill()
        assert e.wait(timeout=5) == -signal.SIGKILL
