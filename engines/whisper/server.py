"""Run the app under uvicorn with the settings' timeouts; SIGTERM stops it gracefully."""

from __future__ import annotations

import logging
import os

import uvicorn

from .app import create_app
from .settings import Settings
from .transcriber import WhisperTranscriber


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; a model that fails to load exits non-zero (uvicorn's 3)."""
    # The model is a folder: huggingface_hub (a faster-whisper dependency) must not go online.
    os.environ["HF_HUB_OFFLINE"] = "1"
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings, WhisperTranscriber),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        log_level=settings.log_level,
    )
