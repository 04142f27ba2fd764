"""The supervisor's model table (the dicts of `GET /models`) as rows, rich tables and JSON.

Pure functions (no I/O but `print_wide`'s). `orchestra status` prints `compact_table` (one line
per model, readable at 80 columns), `-o wide` prints `wide_table` with `print_wide` (every
column, one row per engine, rows as long as they need), `-o json` prints `as_json`;
`orchestra top` adds `rates_table`. The web console reuses `model_rows`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "sleeping": "cyan",
    "stopping": "yellow",
    "backoff": "magenta",
    "failed": "bold red",
    "cold": "dim",
    "down": "bold red",
    "unknown": "dim",
    "draining": "yellow",
}
_UNBOUNDED = 100_000  # columns offered when measuring a table's natural width
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# States in which a model is changing: "swaps in progress".
TRANSITIONAL = frozenset({"starting", "stopping", "backoff", "draining"})


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model, its engines folded into one line."""

    name: str
    state: str
    hot: bool
    where: str  # host:port of the first engine (+N more), or "-"
    gpus: str  # "0,1" or "-"
    uptime_s: float | None  # the longest-running engine
    restarts: int
    cache_pct: float | None  # page-cache residency of the weights, 0-100
    error: str  # first line of the first engine's last error ("" if none)
    engines: int
    last_startup_s: float | None  # how long its last start took (expected load time)


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def _host_port(engine: Mapping[str, Any]) -> str:
    url = engine.get("url")
    if isinstance(url, str) and url:
        parts = urlsplit(url)
        if parts.hostname in _LOOPBACK and parts.port:
            return f":{parts.port}"
        return parts.netloc or url
    port = engine.get("port")
    return f":{port}" if port else "-"


def model_row(model: Mapping[str, Any]) -> ModelRow:
    engines: list[Mapping[str, Any]] = list(model.get("engines") or [])
    where = _host_port(engines[0]) if engines else "-"
    if not engines and model.get("upstreams"):
        where = urlsplit(model["upstreams"][0]).netloc or "-"
    if len(engines) > 1:
        where += f" +{len(engines) - 1}"
    gpus = sorted({int(g) for e in engines for g in e.get("gpus") or []})
    uptimes = [float(e["uptime_s"]) for e in engines if e.get("uptime_s") is not None]
    startups = [float(e["last_startup_s"]) for e in engines if e.get("last_startup_s") is not None]
    errors = [str(e["last_error"]) for e in engines if e.get("last_error")]
    cache = model.get("page_cache")
    fraction = cache.get("fraction") if isinstance(cache, Mapping) else None
    return ModelRow(
        name=str(model.get("name", "?")),
        state=str(model.get("state", "unknown")),
        hot=bool(model.get("hot")),
        where=where,
        gpus=",".join(str(g) for g in gpus) or "-",
        uptime_s=max(uptimes) if uptimes else None,
        restarts=sum(int(e.get("restarts") or 0) for e in engines),
        cache_pct=None if fraction is None else float(fraction) * 100,
        error=(errors[0].strip().splitlines() or [""])[0] if errors else "",
        engines=len(engines),
        last_startup_s=max(startups) if startups else None,
    )


def model_rows(models: Sequence[Mapping[str, Any]]) -> list[ModelRow]:
    return [model_row(m) for m in models]


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def compact_table(
    models: Sequence[Mapping[str, Any]], width: int = 80, title: str | None = None
) -> Table:
    """One line per model within `width` columns: long names, places and errors are cut with
    an ellipsis, never wrapped (rich would otherwise fold them or drop whole columns)."""
    rows = model_rows(models)
    places = [r.where if r.gpus == "-" else f"{r.where} gpu{r.gpus}" for r in rows]
    fixed = {"STATE": 8, "UP": 4, "RST": 3, "CACHE": 5}
    free = max(width - sum(fixed.values()) - 2 * 6, 24)  # 7 columns: 6 gaps of 2
    # The name first, then the place; the error marker keeps at least 14 columns.
    where_w = min(max([5, *map(len, places)]), 32 if free > 80 else 16)
    name_w = min(max([5, *(len(r.name) for r in rows)]), max(free - where_w - 14, 8))
    error_w = max(free - where_w - name_w, 5)
    table = Table(title=title, header_style="bold", box=None, pad_edge=False, expand=False)
    table.add_column("MODEL", no_wrap=True, overflow="ellipsis", width=name_w)
    table.add_column("STATE", no_wrap=True, width=fixed["STATE"])
    table.add_column("WHERE", no_wrap=True, overflow="ellipsis", width=where_w)
    table.add_column("UP", no_wrap=True, justify="right", width=fixed["UP"])
    table.add_column("RST", no_wrap=True, justify="right", width=fixed["RST"])
    table.add_column("CACHE", no_wrap=True, justify="right", width=fixed["CACHE"])
    table.add_column("ERROR", no_wrap=True, overflow="ellipsis", width=error_w)
    for row, where in zip(rows, places, strict=True):
        table.add_row(
            row.name,
            _state(row.state),
            where,
            ago(row.uptime_s),
            str(row.restarts),
            _pct(row.cache_pct),
            Text("! " + row.error, style="red", no_wrap=True, overflow="ellipsis")
            if row.error
            else "",
        )
    return table


def wide_table(models: Sequence[Mapping[str, Any]]) -> Table:
    """Every column, one row per engine, no cell wrapped or folded: print it with `print_wide`,
    which lets the rows run past the terminal's width (as `kubectl -o wide` does). The last
    error shows its first line, cut at 60 columns (`-o json` has it whole)."""
    table = Table(title="Orchestra models", header_style="bold")
    table.add_column("model", no_wrap=True)
    for column in ("kind", "state", "hot", "engine", "pid", "port", "gpus", "uptime"):
        table.add_column(column, no_wrap=True)
    for column in ("restarts", "page cache", "last used", "last start"):
        table.add_column(column, no_wrap=True)
    table.add_column("last error", no_wrap=True, overflow="ellipsis", max_width=60)
    for m in models:
        cache = m.get("page_cache") or {}
        cached = f"{cache.get('fraction', 0) * 100:.0f}% of {cache.get('bytes_total', 0) >> 20} MiB"
        for i, e in enumerate(m.get("engines") or [{}]):
            first = i == 0
            error = (e.get("last_error") or "").splitlines()
            table.add_row(
                str(m["name"]) if first else "",
                str(m.get("kind", "vllm")) if first else "",
                _state(str(e.get("state", m.get("state", "")))),
                ("yes" if m.get("hot") else "") if first else "",
                str(e.get("id", "")),
                str(e.get("pid") or "-"),
                str(e.get("port", "")),
                ",".join(str(g) for g in e.get("gpus") or []) or "-",
                ago(e.get("uptime_s")),
                str(e.get("restarts", 0)),
                cached if first else "",
                ago(m.get("last_used_s_ago")) if first else "",
                ago(e.get("last_startup_s")),
                error[0] if error else "",
            )
    return table


def print_wide(console: Console, models: Sequence[Mapping[str, Any]]) -> None:
    """`orchestra status -o wide`: the wide table at its natural width, however narrow the
    terminal (rich would otherwise squeeze every cell into a column of single letters)."""
    table = wide_table(models)
    natural = Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum
    options = console.options.update_width(max(console.width, natural))
    lines = console.render_lines(table, options, pad=False, new_lines=True)
    console.print(Segments(s for line in lines for s in line), crop=False, end="")  # as rendered


def as_json(models: Sequence[Mapping[str, Any]]) -> str:
    """The supervisor's table unchanged, plus the folded row of each model under `summary`."""
    out = [{**m, "summary": asdict(model_row(m))} for m in models]
    return json.dumps({"models": out}, indent=2)


def _rate(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def rates_table(rates: Mapping[str, Mapping[str, float | None]]) -> Table:
    """Per-model rates (the dicts of `ModelRates.as_dict`): req/s, errors, TTFT, tokens/s."""
    table = Table(header_style="bold", box=None, pad_edge=False)
    table.add_column("MODEL", no_wrap=True, overflow="ellipsis", max_width=40)
    for column in ("REQ/S", "ERR%", "TTFT", "TOK/S"):
        table.add_column(column, no_wrap=True, justify="right")
    for name, r in sorted(rates.items()):
        error = r.get("error_rate")
        ttft = r.get("ttft_s")
        table.add_row(
            name,
            _rate(r.get("requests_per_s"), ".1f"),
            "-" if error is None else f"{error * 100:.1f}",
            "-" if ttft is None else f"{ttft * 1000:.0f}ms",
            _rate(r.get("tokens_per_s"), ".1f"),
        )
    return table


def top_view(
    models: Sequence[Mapping[str, Any]],
    rates: Mapping[str, Mapping[str, float | None]] | None,
    note: str = "",
    width: int = 80,
) -> RenderableType:
    parts: list[RenderableType] = [compact_table(models, width), Text("")]
    if rates is None:
        parts.append(Text("rates: gateway not reachable" + (f" ({note})" if note else ""), "dim"))
    elif rates:
        parts.append(rates_table(rates))
    else:
        parts.append(Text("rates: collecting…", style="dim"))
    return Group(*parts)
