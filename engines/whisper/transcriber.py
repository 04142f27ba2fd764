"""One Whisper model (faster-whisper on CTranslate2) and what a transcription returns.

`Transcriber.run` is blocking (call it in a worker thread); between segments it checks the
request's deadline and the server's stop event, so neither waits for a long file to finish.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel

from .audio import SAMPLE_RATE
from .settings import Settings

Task = Literal["transcribe", "translate"]


class TranscriptionTimeout(Exception):
    """The request ran past its deadline (`--request-timeout-s`)."""


class Stopped(Exception):
    """The server is shutting down."""


@dataclass(frozen=True, slots=True)
class Options:
    task: Task
    language: str | None  # a Whisper code; None = detected
    prompt: str | None
    temperature: float | None  # None or 0 = Whisper's fallback schedule (0.0, 0.2, ... 1.0)
    word_timestamps: bool


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word]


@dataclass(frozen=True, slots=True)
class Result:
    text: str
    language: str  # a Whisper code
    duration: float  # seconds of audio
    segments: list[Segment]


class Transcriber(Protocol):
    """What the app needs of a model (the real one below; tests may give their own)."""

    languages: frozenset[str]

    def run(
        self,
        samples: npt.NDArray[np.float32],
        options: Options,
        deadline: float,
        stop: threading.Event,
    ) -> Result: ...


FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class WhisperTranscriber:
    """The one model instance of a server; `max_concurrent` CTranslate2 workers share it."""

    def __init__(self, settings: Settings) -> None:
        self.beam_size = settings.beam_size
        self.model = WhisperModel(
            str(settings.model_dir),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.threads,
            num_workers=settings.max_concurrent,
            local_files_only=True,  # a folder; never a hub download
        )
        self.languages = frozenset(self.model.supported_languages)

    def run(
        self,
        samples: npt.NDArray[np.float32],
        options: Options,
        deadline: float,
        stop: threading.Event,
    ) -> Result:
        temperature = options.temperature or FALLBACK_TEMPERATURES
        pieces, info = self.model.transcribe(
            samples,
            language=options.language,
            task=options.task,
            beam_size=self.beam_size,
            temperature=temperature,
            initial_prompt=options.prompt,
            word_timestamps=options.word_timestamps,
        )
        segments: list[Segment] = []
        for piece in pieces:  # a generator: each step decodes the next 30 s window
            segments.append(
                Segment(
                    id=len(segments),
                    seek=int(piece.seek),
                    start=_seconds(piece.start),
                    end=_seconds(piece.end),
                    text=piece.text,
                    tokens=[int(t) for t in piece.tokens],
                    temperature=float(piece.temperature or 0.0),
                    avg_logprob=float(piece.avg_logprob),
                    compression_ratio=float(piece.compression_ratio),
                    no_speech_prob=float(piece.no_speech_prob),
                    words=[
                        Word(w.word, _seconds(w.start), _seconds(w.end)) for w in piece.words or []
                    ],
                )
            )
            if stop.is_set():
                raise Stopped
            if time.monotonic() > deadline:
                raise TranscriptionTimeout
        text = "".join(s.text for s in segments).strip()
        return Result(text, info.language, len(samples) / SAMPLE_RATE, segments)


def _seconds(value: float) -> float:
    """A time as a plain float to the millisecond (faster-whisper gives numpy floats with word
    timestamps, which JSON encoders refuse)."""
    return round(float(value), 3)
