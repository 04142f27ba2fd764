"""A real Whisper beside the real vLLM CPU engine, as the CPU default runs them: the session
stack's supervisor (conftest.py) launches `whisper-tiny` (engines/whisper, a model's own
`engine:`) and `smollm2` (vLLM); with one resident slot each request for the other model swaps
it in on demand. Through the gateway with the OpenAI SDK: two espeak-ng sentences transcribed
(WER stated and bounded), a translation, a non-audio upload refused with a clear 400, then chat
swaps vLLM back in. Runs after the other session-stack tests (conftest orders them)."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import COLD, HOT, STT, Stack, record_figure
from tests.integration.engines.whisper_process import (
    SENTENCES,
    spoken_or_skip,
    wer,
    whisper_model_or_skip,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
LLM = HOT
WER_BOUND = 0.25


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return spoken_or_skip(tmp_path_factory.mktemp("speech"), SENTENCES)


def test_transcribe_translate_refuse_and_swap_back(stack: Stack, speech: dict[str, Path]) -> None:
    whisper_model_or_skip()  # the session stack has STT where this does not skip
    assert stack.model(STT)["kind"] == "whisper"
    vllm = (HOT, COLD)  # one of them is resident: the first transcription swaps it out
    assert any(stack.model(m)["state"] == "ready" for m in vllm), stack.supervisor.models()
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
    assert stack.model(STT)["state"] == "ready"
    assert all(stack.model(m)["upstreams"] == [] for m in vllm)
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
