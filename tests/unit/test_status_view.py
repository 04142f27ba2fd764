"""`orchestra status|top` rendering at 80 columns: long model names, long multi-line errors,
several engines per model; one line per model, nothing past column 80, nothing dropped."""

from __future__ import annotations

import io
import json
from typing import Any

from rich.console import Console, RenderableType

from orchestra.cli.status_view import (
    as_json,
    compact_table,
    model_row,
    print_wide,
    top_view,
)
from orchestra.gateway.console.render import model_rows_html

LONG_NAME = "meta-llama/Llama-3.1-70B-Instruct-with-a-name-longer-than-any-terminal-column"
LONG_ERROR = (
    "llama exited with code 1 during startup; last lines of /var/log/orchestra/llama.log:\n"
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a "
    "total capacity of 79.35 GiB of which 1.2 GiB is free.\n" + "more detail\n" * 30
)


def _engine(i: int, **kw: Any) -> dict[str, Any]:
    base = {
        "id": f"e-{i}",
        "state": "ready",
        "pid": 1000 + i,
        "port": 8001 + i,
        "url": f"http://10.20.30.40:{8001 + i}",
        "gpus": [2 * i, 2 * i + 1],
        "uptime_s": 7300.0,
        "restarts": 1,
        "last_error": None,
        "last_startup_s": 31.5,
    }
    return base | kw


def _models() -> list[dict[str, Any]]:
    return [
        {
            "name": LONG_NAME,
            "state": "ready",
            "hot": True,
            "engines": [_engine(0, last_error=LONG_ERROR), _engine(1)],
            "page_cache": {"fraction": 0.873, "bytes_total": 140 << 30},
            "last_used_s_ago": 3.0,
        },
        {
            "name": "smollm2",
            "state": "starting",
            "hot": False,
            "engines": [
                {
                    "id": "s-0",
                    "state": "starting",
                    "port": 8010,
                    "url": "http://127.0.0.1:8010",
                    "gpus": [],
                }
            ],
            "page_cache": {"fraction": 1.0, "bytes_total": 270 << 20},
        },
        {"name": "remote", "state": "failed", "engines": [], "page_cache": None},
    ]


def _render(renderable: RenderableType, width: int = 80) -> list[str]:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text().rstrip("\n").splitlines()


def test_compact_status_is_one_line_per_model_within_80_columns() -> None:
    lines = _render(compact_table(_models(), 80))
    assert max(len(line) for line in lines) <= 80, lines
    assert len(lines) == 1 + 3  # header + one line per model: no folding, no wrapping
    header, llama, smol, remote = lines
    assert header.split() == ["MODEL", "STATE", "WHERE", "UP", "RST", "CACHE", "ERROR"]
    assert llama.startswith("meta-llama/Llama") and "…" in llama.split()[0]
    assert " ready " in llama and " 2.0h " in llama and " 87% " in llama
    assert "! llama exit" in llama and llama.endswith("…")  # the marker, cut to fit
    assert " 10.20.30.40:800…" in llama
    assert smol.split()[:3] == ["smollm2", "starting", ":8010"] and " 100%" in smol
    assert remote.split()[:4] == ["remote", "failed", "-", "-"]


def test_compact_status_uses_a_wider_terminal() -> None:
    lines = _render(compact_table(_models(), 160), width=160)
    assert max(len(line) for line in lines) <= 160 and len(lines) == 4
    assert LONG_NAME in lines[1]  # the whole name fits now
    assert "gpu0,1,2,3" in lines[1]  # both engines' GPUs, and the second engine counted
    assert "+1" in lines[1]


def test_wide_shows_every_column_and_every_engine() -> None:
    console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    print_wide(console, _models())
    text = console.export_text()
    for column in ("engine", "pid", "port", "gpus", "page cache", "last used", "last start"):
        assert column in text
    assert "e-0" in text and "e-1" in text and "1001" in text
    assert "87% of 143360 MiB" in text


def test_wide_at_80_columns_runs_long_and_folds_no_cell() -> None:
    console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
    print_wide(console, _models())
    lines = console.export_text().rstrip("\n").splitlines()
    # title, top border, header, rule, one line per engine (2 + 1 + 1), bottom border
    assert len(lines) == 4 + 4 + 1, "\n".join(lines)
    assert max(len(line) for line in lines) > 80  # rows run past the terminal, unwrapped
    header = lines[2]
    for column in ("model", "engine", "page cache", "last used", "last start", "last error"):
        assert f" {column} " in header  # every header whole on its one line
    assert LONG_NAME in lines[4]  # the long name whole, on its engine's row
    assert "e-0" in lines[4] and "87% of 143360 MiB" in lines[4] and "llama exited" in lines[4]
    assert "e-1" in lines[5] and "s-0" in lines[6] and "smollm2" in lines[6]
    assert "remote" in lines[7] and "failed" in lines[7]


def test_json_is_the_table_plus_a_summary() -> None:
    data = json.loads(as_json(_models()))
    assert [m["name"] for m in data["models"]] == [LONG_NAME, "smollm2", "remote"]
    summary = data["models"][0]["summary"]
    assert summary["restarts"] == 2 and summary["engines"] == 2 and summary["gpus"] == "0,1,2,3"
    assert summary["error"].startswith("llama exited with code 1")
    assert data["models"][0]["engines"][0]["last_error"] == LONG_ERROR  # the whole error, too


def test_model_row_folds_engines() -> None:
    row = model_row(_models()[0])
    assert row.where == "10.20.30.40:8001 +1"
    assert row.uptime_s == 7300.0 and row.last_startup_s == 31.5
    assert row.cache_pct is not None and round(row.cache_pct) == 87


def test_top_within_80_columns() -> None:
    rates = {
        LONG_NAME: {"requests_per_s": 12.5, "error_rate": 0.02, "ttft_s": 0.123, "tokens_per_s": 8},
        "smollm2": {"requests_per_s": 0.0, "error_rate": None, "ttft_s": None, "tokens_per_s": 0},
    }
    lines = _render(top_view(_models(), rates, width=80))
    assert max(len(line) for line in lines) <= 80, lines
    rate_lines = lines[lines.index("") + 1 :]
    assert rate_lines[0].split() == ["MODEL", "REQ/S", "ERR%", "TTFT", "TOK/S"]
    assert rate_lines[1].split()[1:] == ["12.5", "2.0", "123ms", "8.0"]
    assert rate_lines[2].split() == ["smollm2", "0.0", "-", "-", "0.0"]
    unreachable = _render(top_view(_models(), None, "connection refused", width=80))
    assert "gateway not reachable (connection refused)" in unreachable[-1]


def test_wide_and_the_console_show_what_serves_a_model() -> None:
    models = _models()
    models[1]["kind"] = "whisper"  # a model's own engine; the others are vLLM's
    out = io.StringIO()
    print_wide(Console(width=80, file=out, color_system=None), models)
    rows = {line.split()[1]: line for line in out.getvalue().splitlines() if "smollm2" in line}
    assert "whisper" in rows["smollm2"]
    assert "vllm" in out.getvalue()
    html = model_rows_html(models, {})
    assert '<span class="muted kind">whisper</span>' in html
    assert html.count('class="muted kind"') == 1  # vLLM's models carry no tag
