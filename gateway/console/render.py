"""Server-side HTML for the console: the page and the fragments the live feed replaces.

Every value from the supervisor or config is escaped here; the page's script only swaps these
fragments in (and reads `data-*` attributes), so there is one renderer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from importlib.resources import files
from string import Template
from typing import Any

from orchestra.cli.status_view import ModelRow, ago, model_row

STATIC = files("orchestra.gateway.console") / "static"
STATIC_TYPES = {
    "console.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
_MANAGED_ACTIONS = ("load", "unload", "sleep", "wake", "restart")


def static_file(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _rate_cells(rates: Mapping[str, float | None] | None) -> str:
    if rates is None:
        return '<td class="num">-</td>' * 4
    rps = rates.get("requests_per_s")
    err = rates.get("error_rate")
    ttft = rates.get("ttft_s")
    tps = rates.get("tokens_per_s")
    cells = (
        "-" if rps is None else f"{rps:.2f}",
        "-" if err is None else f"{err * 100:.1f}%",
        "-" if ttft is None else f"{ttft * 1000:.0f} ms",
        "-" if tps is None else f"{tps:.1f}",
    )
    return "".join(f'<td class="num">{c}</td>' for c in cells)


def _error_cell(model: Mapping[str, Any], row: ModelRow) -> str:
    errors = [str(e["last_error"]) for e in model.get("engines") or [] if e.get("last_error")]
    if not errors:
        return "<td></td>"
    return (
        f'<td class="err"><details data-key="{escape(row.name)}">'
        f"<summary>{escape(row.error[:60])}</summary><pre>{escape(chr(10).join(errors))}</pre>"
        "</details></td>"
    )


def _actions_cell(model: Mapping[str, Any], row: ModelRow) -> str:
    if not model.get("managed", True):
        return '<td class="actions"><span class="muted">unmanaged</span></td>'
    buttons = "".join(
        f'<button type="button" data-action="{a}" data-model="{escape(row.name)}">{a}</button>'
        for a in _MANAGED_ACTIONS
        if a not in ("sleep", "wake") or model.get("sleep_mode")
    )
    return f'<td class="actions">{buttons}</td>'


def _kind(model: Mapping[str, Any]) -> str:
    """What serves it, when that is not vLLM (a model's own engine: `whisper`, ...)."""
    kind = str(model.get("kind") or "vllm")
    return "" if kind == "vllm" else f' <span class="muted kind">{escape(kind)}</span>'


def model_rows_html(
    models: Sequence[Mapping[str, Any]], rates: Mapping[str, Mapping[str, float | None]]
) -> str:
    out = []
    for model in models:
        row = model_row(model)
        name = escape(row.name)
        hot = ("hot" if row.hot else "cold") if model.get("managed", True) else "-"
        cache = "-" if row.cache_pct is None else f"{row.cache_pct:.0f}%"
        out.append(
            f'<tr data-model="{name}" data-state="{escape(row.state)}">'
            f'<td class="name">{name}{_kind(model)}</td>'
            f'<td><span class="state state-{escape(row.state)}">{escape(row.state)}</span></td>'
            f"<td>{hot}</td><td>{escape(row.where)}</td><td>{escape(row.gpus)}</td>"
            f'<td class="num">{ago(row.uptime_s)}</td><td class="num">{row.restarts}</td>'
            f'<td class="num">{cache}</td>'
            f"{_rate_cells(rates.get(row.name))}"
            f"{_error_cell(model, row)}{_actions_cell(model, row)}</tr>"
        )
    if not out:
        return '<tr><td colspan="15" class="muted">no models configured</td></tr>'
    return "".join(out)


def swaps_html(swaps: Sequence[Mapping[str, Any]]) -> str:
    if not swaps:
        return '<li class="muted">none</li>'
    items = []
    for s in swaps:
        expected = s.get("expected_s")
        eta = "" if expected is None else f", last start took {expected:.0f} s"
        what = escape(str(s.get("action") or s.get("state")))
        items.append(
            f'<li data-model="{escape(str(s["model"]))}"><b>{escape(str(s["model"]))}</b> '
            f"{what} for {s.get('elapsed_s', 0):.0f} s{eta}</li>"
        )
    return "".join(items)


def page_html(
    models: Sequence[Mapping[str, Any]],
    rates: Mapping[str, Mapping[str, float | None]],
    swaps: Sequence[Mapping[str, Any]],
    refresh_s: float,
    notice: str,
) -> str:
    template = Template((STATIC / "index.html").read_text(encoding="utf-8"))
    options = "".join(
        f'<option value="{escape(str(m["name"]))}">{escape(str(m["name"]))}</option>'
        for m in models
    )
    return template.safe_substitute(
        model_rows=model_rows_html(models, rates),
        swaps=swaps_html(swaps),
        model_options=options,
        refresh_ms=str(int(refresh_s * 1000)),
        notice=escape(notice),
    )
