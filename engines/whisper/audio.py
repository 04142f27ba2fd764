"""An upload to 16 kHz mono samples (PyAV's bundled FFmpeg), or why it is not audio."""

from __future__ import annotations

from typing import BinaryIO

import av
import numpy as np
import numpy.typing as npt
from faster_whisper.audio import decode_audio

SAMPLE_RATE = 16_000  # what Whisper's feature extractor takes


class UnreadableAudio(Exception):
    """The upload is not audio FFmpeg can decode (the message names the problem)."""


def decode(file: BinaryIO, filename: str) -> npt.NDArray[np.float32]:
    """The upload's first audio stream as float32 samples at SAMPLE_RATE, mono."""
    try:
        with av.open(file, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                kinds: list[str] = sorted({s.type for s in container.streams}) or ["no streams"]
                raise UnreadableAudio(
                    f"{filename!r} has no audio stream ({container.format.name}: "
                    f"{', '.join(kinds)})"
                )
        file.seek(0)
        samples = decode_audio(file, sampling_rate=SAMPLE_RATE)
    except av.error.FFmpegError as e:
        reason = e.strerror or str(e)
        raise UnreadableAudio(f"{filename!r} is not audio FFmpeg can decode ({reason})") from e
    if samples.size == 0:
        raise UnreadableAudio(f"{filename!r} holds no audio samples")
    return np.asarray(samples, dtype=np.float32)
