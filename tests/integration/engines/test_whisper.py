"""The Whisper engine for real: `python -m orchestra.engines.whisper` on the bundled tiny.en model
(CPU, int8, one thread) as a subprocess, spoken to by espeak-ng, asked with the official openai
SDK. Word error rate bound: at most 0.25 per sentence (measured: 0 on these two)."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
from openai.types.audio import TranscriptionVerbose, TranslationVerbose

from tests.integration.engines.conftest import LONG
from tests.integration.engines.whisper_process import (
    NAME,
    SENTENCES,
    STARTUP_TIMEOUT_S,
    WhisperProcess,
    seconds_of,
    wer,
    words,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MAX_WER = 0.25
REQUEST_TIMEOUT_S = 120.0


def test_wer_itself() -> None:
    assert wer("the quick brown fox", "the quick brown fox.") == 0.0
    assert wer("the quick brown fox", "the quick round fox") == 0.25
    assert wer("a b", "a x b y") == 1.0  # two insertions
    assert wer("a b c d", "a d") == 0.5  # two deletions


@pytest.fixture(scope="module")
def client(engine: WhisperProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=engine.url + "/v1", api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S
    )


def test_two_sentences_and_the_figures(
    engine: WhisperProcess, client: openai.OpenAI, speech: dict[str, Path]
) -> None:
    for name, reference in SENTENCES.items():
        with speech[name].open("rb") as f:
            text = client.audio.transcriptions.create(model=NAME, file=f).text
        rate = wer(reference, text)
        print(f"{name}: {seconds_of(speech[name]):.2f} s of audio, WER {rate:.3f}: {text!r}")
        assert rate <= MAX_WER, (reference, text)
    latencies = []
    for _ in range(3):  # warm: the model has answered above
        started = time.monotonic()
        client.audio.transcriptions.create(model=NAME, file=speech["weather"])
        latencies.append(time.monotonic() - started)
    assert engine.proc is not None
    rss_mb = psutil.Process(engine.proc.pid).memory_info().rss / 2**20
    load_s = engine.metric("orchestra_whisper_model_load_seconds")
    print(
        f"ready after {engine.ready_after_s:.2f} s (model load {load_s:.2f} s); warm latency "
        f"for {seconds_of(speech['weather']):.2f} s: {sorted(latencies)}; RSS {rss_mb:.0f} MiB"
    )
    assert 0 < load_s < STARTUP_TIMEOUT_S and rss_mb < 2048


def test_response_formats_parse_with_the_sdk(
    client: openai.OpenAI, speech: dict[str, Path]
) -> None:
    clip, reference = speech["weather"], SENTENCES["weather"]
    text = client.audio.transcriptions.create(model=NAME, file=clip, response_format="text")
    assert isinstance(text, str) and text.endswith("\n") and wer(reference, text) <= MAX_WER
    srt = client.audio.transcriptions.create(model=NAME, file=clip, response_format="srt")
    cue = re.compile(r"^1\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)\n", re.M)
    found = cue.match(srt)
    assert found is not None, srt
    assert found[1] == "00:00:00,000" and wer(reference, found[3]) <= MAX_WER
    vtt = client.audio.transcriptions.create(model=NAME, file=clip, response_format="vtt")
    assert re.match(r"WEBVTT\n\n00:00:00\.000 --> \d\d:\d\d:\d\d\.\d{3}\n.+\n", vtt), vtt
    verbose = client.audio.transcriptions.create(
        model=NAME, file=clip, response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert isinstance(verbose, TranscriptionVerbose)
    assert verbose.language == "english" and wer(reference, verbose.text) <= MAX_WER
    assert abs(verbose.duration - seconds_of(clip)) < 0.05
    assert verbose.segments and verbose.segments[0].id == 0
    assert verbose.segments[-1].end <= verbose.duration + 0.5
    assert verbose.words and len(verbose.words) == len(words(verbose.text))
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts)


def test_a_translation(client: openai.OpenAI, speech: dict[str, Path]) -> None:
    clip, reference = speech["report"], SENTENCES["report"]
    plain = client.audio.translations.create(model=NAME, file=clip)
    assert wer(reference, plain.text) <= MAX_WER  # English speech, English text
    verbose = client.audio.translations.create(
        model=NAME, file=clip, response_format="verbose_json"
    )
    assert isinstance(verbose, TranslationVerbose) and verbose.language == "english"


def test_a_non_audio_upload_and_a_wrong_model(
    engine: WhisperProcess, client: openai.OpenAI, speech: dict[str, Path]
) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(
            model=NAME, file=("notes.txt", b"minutes\n", "text/plain")
        )
    error = error_body(bad.value)
    assert error["param"] == "file" and error["code"] == "invalid_audio"
    assert "'notes.txt'" in error["message"] and "decode" in error["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.audio.transcriptions.create(model="whisper-1", file=speech["report"])
    assert error_body(missing.value)["code"] == "model_not_found"
    assert engine.proc is not None and engine.proc.poll() is None
    assert "Traceback" not in engine.output()


def error_body(e: openai.APIStatusError) -> dict[str, Any]:
    body = e.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def test_metrics_count_requests_and_audio(
    engine: WhisperProcess, client: openai.OpenAI, speech: dict[str, Path]
) -> None:
    ok = 'orchestra_whisper_requests_total{endpoint="transcriptions",status="200"}'
    bad = 'orchestra_whisper_requests_total{endpoint="transcriptions",status="404"}'
    audio = 'orchestra_whisper_audio_seconds_total{endpoint="transcriptions"}'
    count = 'orchestra_whisper_processing_seconds_count{endpoint="transcriptions"}'
    before = {m: engine.metric(m) for m in (ok, bad, audio, count)}
    client.audio.transcriptions.create(model=NAME, file=speech["weather"])
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="nope", file=speech["weather"])
    after = {m: engine.metric(m) for m in (ok, bad, audio, count)}
    assert after[ok] - before[ok] == 1 and after[bad] - before[bad] == 1
    assert after[count] - before[count] == 1
    assert after[audio] - before[audio] == pytest.approx(seconds_of(speech["weather"]), abs=0.01)


def test_health_answers_while_a_long_clip_is_transcribed(
    engine: WhisperProcess, client: openai.OpenAI, speech: dict[str, Path]
) -> None:
    running = f'vllm:num_requests_running{{model_name="{NAME}"}}'
    result: list[str] = []
    worker = threading.Thread(
        target=lambda: result.append(
            client.audio.transcriptions.create(model=NAME, file=speech["long"]).text
        )
    )
    began = time.monotonic()
    worker.start()
    health_s, seen_running = [], False
    try:
        while worker.is_alive():
            started = time.monotonic()
            assert httpx.get(engine.url + "/health", timeout=5.0).status_code == 200
            health_s.append(time.monotonic() - started)
            seen_running = seen_running or engine.metric(running) == 1
    finally:
        worker.join(REQUEST_TIMEOUT_S)
    took = time.monotonic() - began
    clip_s = seconds_of(speech["long"])
    print(f"{clip_s:.1f} s clip in {took:.1f} s; /health max {max(health_s):.3f} s")
    # Relative, not a fixed second: a busy neighbour (parallel tests) slows both alike, and a
    # health check held behind the transcription would take most of it.
    assert seen_running and len(health_s) >= 3 and max(health_s) < took / 3, (health_s, took)
    assert wer(LONG, result[0]) <= MAX_WER, result


def test_request_timeout_api_key_and_sigterm(model: Path, speech: dict[str, Path]) -> None:
    process = WhisperProcess("--request-timeout-s", "0.01", "--api-key", "s3cret", model=model)
    try:
        process.start()
        keyless = openai.OpenAI(base_url=process.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            keyless.audio.transcriptions.create(model=NAME, file=speech["report"])
        keyed = openai.OpenAI(base_url=process.url + "/v1", api_key="s3cret", max_retries=0)
        with pytest.raises(openai.APIStatusError) as late:
            keyed.audio.transcriptions.create(model=NAME, file=speech["report"])
        assert late.value.status_code == 504
        assert "--request-timeout-s" in error_body(late.value)["message"]
    finally:
        started = time.monotonic()
        code = process.stop()
    # uvicorn re-raises the SIGTERM it handled once it has shut down: the exit is by the signal
    # after a graceful stop, well within the grace (a SIGKILL would leave code None).
    assert code in (0, -signal.SIGTERM) and time.monotonic() - started < 15
