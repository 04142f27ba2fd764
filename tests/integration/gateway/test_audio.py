"""Audio transcription/translation uploads: multipart forwarded by the form's `model`, spooled,
re-sent intact (checked by sha256 at the engine), renamed for aliases and fallbacks, 413 past
the limit. Through the OpenAI SDK where it can say it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

LIMIT = 3 * 1024 * 1024
AUDIO = os.urandom(2 * 1024 * 1024 + 17)  # past the spool threshold: goes through a file


def _expected(kind: str, name: str, data: bytes) -> str:
    return f"{kind} of {name}: {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}"


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, FakeEngineProcess]]:
    with (
        FakeEngineProcess(name="whisper") as one,
        FakeEngineProcess(name="whisper") as replica,
        FakeEngineProcess(name="whisper-b") as two,
    ):
        yield {"whisper": one, "whisper#1": replica, "whisper-b": two}


@pytest.fixture(scope="module")
def gateway(engines: dict[str, FakeEngineProcess]) -> Iterator[GatewayProcess]:
    section = fast_gateway_section(
        free_port(),
        retries={"max_attempts": 2},
        uploads={"max_bytes": LIMIT, "spool_bytes": 64 * 1024},
    )
    config = {
        "gateway": section,
        "servers": [
            {
                "name": "whisper",
                "replicas": [{"url": engines["whisper"].url}, {"url": engines["whisper#1"].url}],
            },
            {"name": "whisper-b", "url": engines["whisper-b"].url},
        ],
        "aliases": {"whisper-1": "whisper"},
        "fallbacks": {"whisper": ["whisper-b"]},
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean(engines: dict[str, FakeEngineProcess], gateway: GatewayProcess) -> None:
    for engine in engines.values():
        reset_engine(engine)
    gateway.wait_ready("whisper", "whisper-b")


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0, timeout=20
    ) as sdk:
        yield sdk


def test_transcription_reaches_the_engine_intact(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    reply = client.audio.transcriptions.create(
        model="whisper", file=("talk.wav", AUDIO), language="en"
    )
    assert reply.text == _expected("transcription", "talk.wav", AUDIO)
    records = [r for n in ("whisper", "whisper#1") for r in engines[n].stats()["records"]]
    assert [r["fields"] for r in records] == [{"model": "whisper", "language": "en"}]


def test_translation_through_an_alias(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    reply = client.audio.translations.create(model="whisper-1", file=("talk.mp3", AUDIO))
    assert reply.text == _expected("translation", "talk.mp3", AUDIO)
    records = [r for n in ("whisper", "whisper#1") for r in engines[n].stats()["records"]]
    assert [r["model"] for r in records] == ["whisper"]


def test_fallback_renames_the_model_and_retries_send_it_again(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    for name in ("whisper", "whisper#1"):  # both replicas (attempts) of `whisper` fail
        engines[name].set_fault("503", count=1)
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper", file=("a.wav", AUDIO)
    )
    assert raw.headers["x-orchestra-served-by"] == "whisper-b"
    assert raw.parse().text == _expected("transcription", "a.wav", AUDIO)
    sizes = [r["size"] for n in ("whisper", "whisper#1") for r in engines[n].stats()["records"]]
    assert sizes == [len(AUDIO), len(AUDIO)]  # the spooled body, whole, on each attempt


def test_model_after_the_file_part(gateway: GatewayProcess) -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    body += (
        AUDIO + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'.encode()
    )
    body += f"whisper-1\r\n--{boundary}--\r\n".encode()
    reply = httpx.post(
        gateway.url + "/v1/audio/transcriptions",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=20,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["text"] == _expected("transcription", "x.wav", AUDIO)


def test_too_large_is_413(gateway: GatewayProcess) -> None:
    reply = httpx.post(
        gateway.url + "/v1/audio/transcriptions",
        files={"file": ("big.wav", b"\0" * (LIMIT + 1))},
        data={"model": "whisper"},
        timeout=20,
    )
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "request_too_large"


def test_missing_model_and_not_multipart_are_400(gateway: GatewayProcess) -> None:
    url = gateway.url + "/v1/audio/transcriptions"
    reply = httpx.post(url, files={"file": ("a.wav", b"abc")}, timeout=10)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "model"
    assert httpx.post(url, json={"model": "whisper"}, timeout=10).status_code == 400


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="nope", file=("a.wav", b"abc"))
