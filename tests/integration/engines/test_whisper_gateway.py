"""The Whisper engine behind the gateway: a client asking for OpenAI's `whisper-1` (an alias)
through `python -m orchestra.gateway` gets the engine's transcription, and its errors as is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section
from tests.fake_engine import free_port
from tests.integration.engines.whisper_process import NAME, SENTENCES, WhisperProcess, wer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def gateway(engine: WhisperProcess) -> Iterator[GatewayProcess]:
    section = fast_gateway_section(free_port(), timeouts={"first_byte_s": 120.0, "total_s": 180.0})
    config = {
        "gateway": section,
        "servers": [{"name": NAME, "url": engine.url}],
        "aliases": {"whisper-1": NAME},
    }
    with GatewayProcess(config) as gw:
        yield gw


def test_whisper_1_through_the_gateway(gateway: GatewayProcess, speech: dict[str, Path]) -> None:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0, timeout=180
    ) as client:
        for name, reference in SENTENCES.items():
            text = client.audio.transcriptions.create(model="whisper-1", file=speech[name]).text
            assert wer(reference, text) <= 0.25, (reference, text)
        vtt = client.audio.translations.create(
            model=NAME, file=speech["weather"], response_format="vtt"
        )
        assert vtt.startswith("WEBVTT\n")
        with pytest.raises(openai.BadRequestError) as bad:
            client.audio.transcriptions.create(
                model="whisper-1", file=("notes.txt", b"minutes\n", "text/plain")
            )
        assert bad.value.response.json()["error"]["code"] == "invalid_audio"
