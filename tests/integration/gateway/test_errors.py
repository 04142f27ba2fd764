"""Gateway errors (400/404/413/503/504), `x-request-id`, and upstream replies passed through
byte for byte — checked over raw HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

MAX_BODY = 2048
FIRST_BYTE_S = 0.5
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess(name="m1") as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(engine: FakeEngineProcess) -> Iterator[GatewayProcess]:
    config = {
        "gateway": fast_gateway_section(
            free_port(),
            max_body_bytes=MAX_BODY,
            timeouts={"first_byte_s": FIRST_BYTE_S},
        ),
        "servers": [
            {"name": "m1", "url": engine.url},
            {"name": "renamed", "url": engine.url},
            {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"},
        ],
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def _clean(engine: FakeEngineProcess, gateway: GatewayProcess) -> Iterator[None]:
    reset_engine(engine)
    yield
    engine.set_fault("none")
    gateway.wait_ready("m1", "renamed")


def _error(reply: httpx.Response) -> dict[str, object]:
    body = reply.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


# ---- the gateway's own errors ------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b'{"model": "m1",', b"\xff\xfe"],
    ids=["junk", "empty", "cut", "bytes"],
)
def test_malformed_json_is_400(http: httpx.Client, body: bytes) -> None:
    reply = http.post("/v1/chat/completions", content=body)
    assert reply.status_code == 400
    error = _error(reply)
    assert error["type"] == "invalid_request_error"
    assert "JSON" in str(error["message"])


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_json_that_is_not_an_object_is_400(http: httpx.Client, body: object) -> None:
    reply = http.post("/v1/completions", content=json.dumps(body))
    assert reply.status_code == 400
    assert "JSON object" in str(_error(reply)["message"])


@pytest.mark.parametrize("model", ["__missing__", "", 42, None, ["m1"]])
def test_missing_or_bad_model_is_400(
    http: httpx.Client, engine: FakeEngineProcess, model: object
) -> None:
    body: dict[str, object] = {"prompt": "hi"}
    if model != "__missing__":
        body["model"] = model
    reply = http.post("/v1/completions", json=body)
    assert reply.status_code == 400
    assert _error(reply)["param"] == "model"
    assert engine.stats()["records"] == []  # never reached an upstream


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
def test_unknown_model_is_404(http: httpx.Client, path: str) -> None:
    reply = http.post(path, json={"model": "gpt-9", "input": "x", "prompt": "x"})
    assert reply.status_code == 404
    error = _error(reply)
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "model"


def test_body_over_the_limit_is_413(http: httpx.Client, engine: FakeEngineProcess) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * MAX_BODY}]}
    reply = http.post("/v1/chat/completions", json=big)
    assert reply.status_code == 413
    assert _error(reply)["code"] == "request_too_large"
    assert engine.stats()["records"] == []


def test_chunked_body_over_the_limit_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m1", "prompt": "'
        for _ in range(8):
            yield b"y" * 512
        yield b'"}'

    reply = http.post("/v1/completions", content=chunks())  # no content-length: chunked
    assert "content-length" not in reply.request.headers
    assert reply.status_code == 413


def test_body_just_under_the_limit_passes(http: httpx.Client) -> None:
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x"}]}).encode()
    padded = body[:-1] + b" " * (MAX_BODY - len(body)) + b"}"
    assert len(padded) == MAX_BODY
    assert http.post("/v1/chat/completions", content=padded).status_code == 200


def test_no_upstream_is_503(http: httpx.Client) -> None:
    reply = http.post("/v1/chat/completions", json={**CHAT, "model": "dead"})
    assert reply.status_code == 503
    assert _error(reply)["code"] == "no_upstream_available"
    assert reply.headers["retry-after"] == "1"
    # Marked down now: the next request is refused without a connect attempt.
    again = http.post("/v1/chat/completions", json={**CHAT, "model": "dead"})
    assert again.status_code == 503


@pytest.mark.parametrize("fault", ["hang", "slow-headers"])
def test_upstream_timeout_is_504(
    http: httpx.Client, engine: FakeEngineProcess, gateway: GatewayProcess, fault: str
) -> None:
    engine.set_fault(fault, count=1, delay=FIRST_BYTE_S * 6)
    reply = http.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 504
    error = _error(reply)
    assert error["code"] == "upstream_timeout"
    assert error["type"] == "timeout"
    assert reply.elapsed.total_seconds() < FIRST_BYTE_S * 4


def test_stream_timeout_before_first_byte_is_504(
    http: httpx.Client, engine: FakeEngineProcess
) -> None:
    engine.set_fault("hang", count=1)
    reply = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 504
    assert reply.headers["content-type"] == "application/json"


# ---- x-request-id -----------------------------------------------------------------------------
def test_request_id_is_returned_and_sent_upstream(
    http: httpx.Client, engine: FakeEngineProcess
) -> None:
    reply = http.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "req-42"})
    assert reply.status_code == 200
    assert reply.headers.get_list("x-request-id") == ["req-42"]
    assert engine.stats()["records"][-1]["x_request_id"] == "req-42"


def test_request_id_is_made_when_absent(http: httpx.Client, engine: FakeEngineProcess) -> None:
    reply = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    rid = reply.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert engine.stats()["records"][-1]["x_request_id"] == rid
    other = http.post("/v1/chat/completions", json=CHAT)
    assert other.headers["x-request-id"] != rid


def test_request_id_on_errors_and_plain_routes(http: httpx.Client) -> None:
    for reply in (
        http.post("/v1/chat/completions", content=b"{", headers={"x-request-id": "e1"}),
        http.post("/v1/completions", json={"model": "zz"}, headers={"x-request-id": "e1"}),
        http.get("/health", headers={"x-request-id": "e1"}),
    ):
        assert reply.headers.get_list("x-request-id") == ["e1"]


def test_overlong_request_id_is_truncated(http: httpx.Client) -> None:
    reply = http.get("/health", headers={"x-request-id": "a" * 500})
    assert reply.headers["x-request-id"] == "a" * 128


def test_authorization_is_forwarded_without_gateway_keys(
    http: httpx.Client, engine: FakeEngineProcess
) -> None:
    http.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-up"})
    http.post("/v1/chat/completions", json=CHAT)
    records = engine.stats()["records"]
    assert [r["authorization"] for r in records] == [True, False]


# ---- upstream replies pass through unchanged ------------------------------------------------
def test_upstream_404_passes_through(http: httpx.Client, engine: FakeEngineProcess) -> None:
    via_gateway = http.post("/v1/chat/completions", json={**CHAT, "model": "renamed"})
    direct = httpx.post(engine.url + "/v1/chat/completions", json={**CHAT, "model": "renamed"})
    assert via_gateway.status_code == direct.status_code == 404
    assert via_gateway.content == direct.content
    assert via_gateway.headers["x-orchestra-backend"] == "vllm"


@pytest.mark.parametrize(("fault", "status"), [("500", 500), ("error", 418), ("429", 429)])
def test_upstream_error_passes_through(
    http: httpx.Client, engine: FakeEngineProcess, fault: str, status: int
) -> None:
    engine.set_fault(fault, count=1, status=status)
    reply = http.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == status
    assert reply.json() == {
        "error": {
            "message": f"Injected fault: {fault}",
            "type": {500: "InternalServerError", 429: "RateLimitError"}.get(status, "APIError"),
            "param": None,
            "code": status,
        }
    }
    if status == 429:
        assert reply.headers["retry-after"] == "1"
    assert engine.stats()["by_path"]["/v1/chat/completions"] == 1  # no retry of a 4xx/500


def test_upstream_503_passes_through_when_no_other_replica(
    http: httpx.Client, engine: FakeEngineProcess
) -> None:
    engine.set_fault("503", count=1)
    reply = http.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 503
    assert reply.json()["error"]["message"] == "Injected fault: 503"
    assert reply.headers["retry-after"] == "1"


def test_success_passes_through_byte_for_byte(
    http: httpx.Client, engine: FakeEngineProcess
) -> None:
    via_gateway = http.post("/v1/embeddings", json={"model": "m1", "input": "same words"})
    direct = httpx.post(engine.url + "/v1/embeddings", json={"model": "m1", "input": "same words"})

    def stable(raw: bytes) -> bytes:
        return re.sub(rb'"(id|created)":("[^"]*"|\d+)', b"", raw)

    assert via_gateway.status_code == 200
    assert stable(via_gateway.content) == stable(direct.content)
    assert via_gateway.headers["content-type"] == direct.headers["content-type"]
