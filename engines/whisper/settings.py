"""The engine's settings: one frozen object built by the command line (cli.py), read by all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    model_dir: Path
    served_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"  # CTranslate2 device: cpu | cuda | auto
    compute_type: str = "int8"  # CTranslate2 compute type (int8, int8_float32, float32, ...)
    threads: int = 0  # CTranslate2 intra-op threads per transcription; 0 = its default
    max_concurrent: int = 1  # transcriptions at once (a semaphore; CTranslate2 workers)
    max_waiting: int = 16  # requests waiting for a slot beyond which a request gets a 503
    queue_timeout_s: float = 60.0  # wait for a slot at most this long (then 503)
    request_timeout_s: float = 300.0  # decode + transcription bound (checked per segment)
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's limit (25 MB)
    beam_size: int = 5
    api_key: str | None = None  # with it, /v1/* need `Authorization: Bearer KEY` (as vLLM)
    keep_alive_s: int = 5  # uvicorn's idle keep-alive timeout
    shutdown_timeout_s: int = 10  # uvicorn's graceful-shutdown bound after SIGTERM
    log_level: str = "info"
