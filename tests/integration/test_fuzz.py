"""Bad input never makes the gateway answer 500: each case is a 4xx OpenAI-shaped error or an
untouched pass-through to the engine. Explicit cases first, then a hypothesis fuzz."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import GatewayProcess, fast_gateway_section
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(120)
LIMIT = 64 * 1024
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gw() -> Iterator[httpx.Client]:
    with FakeEngineProcess(name="m") as engine:
        config = {
            "servers": [{"name": "m", "url": engine.url}],
            "gateway": fast_gateway_section(free_port(), max_body_bytes=LIMIT),
        }
        with (
            GatewayProcess(config) as gateway,
            httpx.Client(base_url=gateway.url, timeout=10) as client,
        ):
            yield client


def assert_not_gateway_500(reply: httpx.Response) -> None:
    from_upstream = "x-orchestra-backend" in reply.headers
    assert reply.status_code != 500 or from_upstream, reply.text
    if reply.status_code >= 400 and not from_upstream:
        body = reply.json()
        assert set(body) == {"error"} and isinstance(body["error"]["message"], str), body


def _raw(client: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    return client.post(CHAT, content=body, headers={"content-type": "application/json", **headers})


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b"", 400),
        (b'{"model": "m", "x": "\xff\xfe"}', 400),  # invalid UTF-8
        (b'{"messages": []}', 400),  # no model
        (b'{"model": 5}', 400),
        (b'{"model": "nope", "messages": []}', 404),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "a"}', 400),
        (b'{"model": "m"}', 400),  # missing messages: the engine's own 400
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "zzz": {"a": 1}}', 200),
    ],
)
def test_bad_input(gw: httpx.Client, body: bytes, status: int) -> None:
    reply = _raw(gw, body)
    assert reply.status_code == status, reply.text
    assert_not_gateway_500(reply)


def test_oversize_body(gw: httpx.Client) -> None:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * LIMIT}]})
    reply = _raw(gw, body)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no content-length: counted while streaming in
        for _ in range(4):
            yield b" " * (LIMIT // 2)

    streamed = gw.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_huge_header(gw: httpx.Client) -> None:
    try:
        reply = gw.post(CHAT, content=b"{}", headers={"x-big": "a" * 200_000})
    except httpx.RemoteProtocolError:
        return  # the HTTP parser refused it and closed the connection: no 500 either
    assert reply.status_code < 500, reply.status_code


def test_huge_request_id_is_truncated(gw: httpx.Client) -> None:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    reply = _raw(gw, body, **{"x-request-id": "r" * 5000})
    assert reply.status_code == 200 and len(reply.headers["x-request-id"]) == 128


def _dumps(value: object) -> bytes:
    # The stdlib encoder: hypothesis draws integers beyond 64 bits, which orjson refuses.
    return json.dumps(value).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant"]), "content": st.text(max_size=30)}
    ),
    min_size=1,
    max_size=3,
)
chat_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["m", "missing", ""]) | st.integers(), "messages": messages},
    optional={
        "max_tokens": st.integers(-5, 40) | st.text(max_size=4) | st.none(),
        "stream": st.booleans() | st.text(max_size=3),
        "temperature": st.floats(allow_nan=False) | st.text(max_size=3),
        "extra": json_values,
    },
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(
        chat_bodies.map(_dumps),
        json_values.map(_dumps),
        st.binary(max_size=200),
    ),
    path=st.sampled_from([CHAT, "/v1/completions", "/v1/embeddings"]),
)
def test_fuzz_never_500(gw: httpx.Client, body: bytes, path: str) -> None:
    reply = gw.post(path, content=body, headers={"content-type": "application/json"})
    assert_not_gateway_500(reply)
