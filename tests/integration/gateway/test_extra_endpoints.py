"""vLLM's other endpoints (tokenize, detokenize, rerank, score, pooling) go to the engine of the
request's `model`, aliases included, and its reply comes back unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine
from tests.fake_engine import FakeEngineProcess, extra_reply, free_port

pytestmark = pytest.mark.timeout(60)

BODIES: dict[str, dict[str, Any]] = {
    "/tokenize": {"prompt": "hello there world"},
    "/detokenize": {"tokens": [1, 2, 3]},
    "/v1/rerank": {"query": "cats", "documents": ["dogs", "cats purr", "fish"]},
    "/rerank": {"query": "cats", "documents": ["a", "b"]},
    "/v1/score": {"text_1": "a cat", "text_2": "a kitten"},
    "/score": {"text_1": "a cat", "text_2": "a dog"},
    "/pooling": {"input": "pool me"},
}


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, FakeEngineProcess]]:
    with FakeEngineProcess(name="m1") as one, FakeEngineProcess(name="m2") as two:
        yield {"m1": one, "m2": two}


@pytest.fixture(scope="module")
def gateway(engines: dict[str, FakeEngineProcess]) -> Iterator[GatewayProcess]:
    config = {
        "gateway": fast_gateway_section(free_port()),
        "servers": [{"name": n, "url": e.url} for n, e in engines.items()],
        "aliases": {"reranker": "m2"},
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean(engines: dict[str, FakeEngineProcess]) -> None:
    for engine in engines.values():
        reset_engine(engine)


@pytest.mark.parametrize("path", sorted(BODIES))
@pytest.mark.parametrize("model", ["m2", "reranker"])
def test_extra_endpoint_goes_to_the_models_engine(
    path: str, model: str, gateway: GatewayProcess, engines: dict[str, FakeEngineProcess]
) -> None:
    body = {"model": model, **BODIES[path]}
    reply = httpx.post(gateway.url + path, json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-orchestra-served-by"] == "m2"
    direct = httpx.post(engines["m2"].url + path, json={**body, "model": "m2"}, timeout=10)
    expected = extra_reply(path, {**body, "model": "m2"}, "m2")
    for got in (reply.json(), direct.json()):
        for volatile in ("id", "created"):
            got.pop(volatile, None)
            expected.pop(volatile, None)
        assert got == expected
    paths = [r["path"] for r in engines["m2"].stats()["records"]]
    assert paths == [path, path]  # the gateway's call, then the direct one
    assert engines["m1"].stats()["records"] == []


def test_extra_endpoint_needs_a_model(gateway: GatewayProcess) -> None:
    reply = httpx.post(gateway.url + "/tokenize", json={"prompt": "x"}, timeout=10)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "model"
