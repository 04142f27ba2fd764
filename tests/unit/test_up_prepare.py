"""`orchestra up`'s first-run step: which configs make it build the engine venv and models/."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from orchestra import models, up
from orchestra.config import load_config, parse_config
from tests.conftest import REPO_ROOT


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(models, "engine_installed", lambda: False)
    monkeypatch.setattr(models, "model_prepared", lambda out: False)
    monkeypatch.setattr(models, "install_engine", lambda: made.append("engine"))
    monkeypatch.setattr(
        models, "prepare_model", lambda name, out=None: made.append(f"model {name} {out}")
    )
    return made


def test_cpu_default_builds_engine_and_model_when_missing(calls: list[str]) -> None:
    config = load_config(REPO_ROOT / "configs" / "cpu.yaml")
    up._prepare_local(Console(quiet=True), config)
    assert calls == [
        "engine",
        f"model smollm2 {REPO_ROOT / 'models' / 'smollm2'}",
        f"model whisper-tiny {REPO_ROOT / 'models' / 'whisper-tiny'}",
    ]


def test_foreign_engine_and_model_paths_are_left_alone(calls: list[str], tmp_path: Path) -> None:
    config = parse_config(
        {
            "servers": [{"name": "x", "model": str(tmp_path / "x")}],
            "rotation_pool": [{"name": "y", "model": "models/unknown-model"}],
            "engine": {"command": ["vllm", "serve"]},
        }
    )
    up._prepare_local(Console(quiet=True), config)
    assert calls == []


def test_prepare_model_rejects_unknown_names() -> None:
    with pytest.raises(models.PrepareFailed, match="unknown model 'gpt-9'"):
        models.prepare_model("gpt-9")


def test_models_folder_behind_a_link_is_prepared(
    calls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The container image: /opt/orchestra/models is a link to the /data volume's models/.
    (tmp_path / "data-models").mkdir()
    (tmp_path / "models").symlink_to(tmp_path / "data-models")
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path / "models")
    config = parse_config(
        {"servers": [{"name": "s", "model": str(tmp_path / "models" / "smollm2")}]}
    )
    up._prepare_local(Console(quiet=True), config)
    assert calls == [f"model smollm2 {tmp_path / 'data-models' / 'smollm2'}"]
