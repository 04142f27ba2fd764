"""A transcription in each of OpenAI's `response_format`s: json, text, verbose_json, srt, vtt.

verbose_json follows the SDK's `openai.types.audio.TranscriptionVerbose` (and
`TranslationVerbose`, whose `language` is the output's: always english).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from starlette.responses import Response

from .languages import language_name
from .transcriber import Result, Task

Format = Literal["json", "text", "verbose_json", "srt", "vtt"]
FORMATS: tuple[Format, ...] = ("json", "text", "verbose_json", "srt", "vtt")
FORMATS_BY_NAME: dict[str, Format] = {f: f for f in FORMATS}


def timestamp(seconds: float, decimal: str) -> str:
    """HH:MM:SS,mmm (SubRip, decimal ",") or HH:MM:SS.mmm (WebVTT, ".")."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(result: Result) -> str:
    cues = [
        f"{i}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(result.segments, start=1)
    ]
    return "\n".join(cues)


def vtt(result: Result) -> str:
    cues = [
        f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in result.segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def verbose(result: Result, task: Task, words: bool) -> dict[str, Any]:
    language = "english" if task == "translate" else language_name(result.language)
    body: dict[str, Any] = {
        "task": task,
        "language": language,
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": [
            {
                "id": s.id,
                "seek": s.seek,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": s.tokens,
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in result.segments
        ],
    }
    if words:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end}
            for s in result.segments
            for w in s.words
        ]
    if task == "transcribe":
        body["usage"] = {"type": "duration", "seconds": round(result.duration, 3)}
    return body


def render(result: Result, fmt: Format, task: Task, words: bool) -> Response:
    """The HTTP response for `result` in format `fmt`."""
    if fmt == "json":
        return Response(orjson.dumps({"text": result.text}), media_type="application/json")
    if fmt == "verbose_json":
        return Response(orjson.dumps(verbose(result, task, words)), media_type="application/json")
    if fmt == "srt":
        return Response(srt(result), media_type="application/x-subrip; charset=utf-8")
    if fmt == "vtt":
        return Response(vtt(result), media_type="text/vtt")
    return Response(result.text + "\n", media_type="text/plain")
