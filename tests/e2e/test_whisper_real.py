"""A real Whisper beside the real vLLM CPU engine, as the CPU default runs them: the supervisor
launches `whisper-tiny` (engines/whisper, a model's own `engine:`) and `smollm2` (vLLM); with
one resident slot each request for the other model swaps it in on demand. Through the gateway
with the OpenAI SDK: two espeak-ng sentences transcribed (WER stated and bounded), a
translation, a non-audio upload refused with a clear 400, then chat swaps vLLM back in."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import GatewayProcess
from tests.e2e.conftest import Stack, record_figure, stack_config
from tests.fake_engine import free_port
from tests.integration.engines.whisper_process import (
    SENTENCES,
    spoken_or_skip,
    wer,
    whisper_model_or_skip,
)
from tests.integration.supervisor.helpers import SupervisorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
STT, LLM = "whisper-tiny", "smollm2"
WER_BOUND = 0.25


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return spoken_or_skip(tmp_path_factory.mktemp("speech"), SENTENCES)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    model = whisper_model_or_skip()
    tmp: Path = tmp_path_factory.mktemp("whisper")
    config = stack_config(tmp)
    config["rotation_pool"] = [
        {
            "name": STT,
            "model": str(model),
            "port": free_port(),
            "extra_args": ["--threads", "1"],
            "engine": {
                "kind": "whisper",
                "command": [sys.executable, "-m", "orchestra.engines.whisper"],
                "model_arg": "--model",
                "startup_timeout_s": 180,
            },
        }
    ]
    config["supervisor"]["max_resident"] = 1  # every switch is a real swap
    supervisor = SupervisorProcess(config, tmp)
    gateway = GatewayProcess(config)
    supervisor.start()
    try:
        running = Stack(supervisor, gateway)
        running.wait_state(LLM, "ready")
        gateway.start()
        yield running
    finally:
        gateway.stop()
        supervisor.stop()


def test_transcribe_translate_refuse_and_swap_back(stack: Stack, speech: dict[str, Path]) -> None:
    client = stack.client
    started = time.monotonic()
    errors = {}
    for name, text in SENTENCES.items():
        with speech[name].open("rb") as audio:
            reply = client.audio.transcriptions.create(model=STT, file=audio)
        errors[name] = round(wer(text, reply.text), 3)
        assert errors[name] <= WER_BOUND, (text, reply.text)
    record_figure(
        "whisper_e2e_first_transcription_incl_swap_s", round(time.monotonic() - started, 1)
    )
    record_figure("whisper_e2e_wer", errors)
    assert stack.model(STT)["state"] == "ready" and stack.model(LLM)["upstreams"] == []
    name = next(iter(SENTENCES))
    with speech[name].open("rb") as audio:
        translated = client.audio.translations.create(model=STT, file=audio)
    assert wer(SENTENCES[name], translated.text) <= WER_BOUND  # English in, English out
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(model=STT, file=("notes.txt", b"not audio at all"))
    assert refused.value.status_code == 400 and "notes.txt" in str(refused.value)
    started = time.monotonic()
    chat = client.chat.completions.create(
        model=LLM,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    assert "Paris" in (chat.choices[0].message.content or "")
    record_figure("whisper_e2e_swap_back_to_vllm_s", round(time.monotonic() - started, 1))
    assert stack.model(STT)["upstreams"] == []  # swapped out again for the LLM
    assert stack.model(STT)["kind"] == "whisper" and stack.model(LLM)["kind"] == "vllm"
