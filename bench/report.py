"""The bench's outputs: a rich table, a JSON file and a PNG plot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def tables(report: dict[str, Any]) -> list[Table]:
    out = []
    rows = report.get("results", {}).get("nonstream", [])
    if rows:
        t = Table(title="Non-streaming: direct vs gateway", title_justify="left")
        for col in (
            "conc",
            "direct req/s",
            "gw req/s",
            "ratio",
            "direct p50/p95/p99 ms",
            "gw p50/p95/p99 ms",
            "+p50 ms",
            "gw CPU µs/req",
            "errors d/g",
        ):
            t.add_column(col, justify="right")
        for row in rows:
            d, g, r = row.get("direct", {}), row.get("gateway", {}), row.get("ratios", {})

            def lat(x: dict[str, Any]) -> str:
                return "/".join(
                    _f(x.get(k)) for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
                )

            t.add_row(
                str(row["concurrency"]),
                _f(d.get("req_per_s")),
                _f(g.get("req_per_s")),
                _f(r.get("throughput_ratio_vs_direct"), 3),
                lat(d),
                lat(g),
                _f(r.get("added_latency_p50_ms"), 2),
                _f(g.get("cpu_us_per_request")),  # from /proc over the gateway's rounds
                f"{d.get('errors', '-')}/{g.get('errors', '-')}",
            )
        out.append(t)
    rows = report.get("results", {}).get("stream", [])
    if rows:
        t = Table(title="Streaming: direct vs gateway", title_justify="left")
        for col in (
            "conc",
            "direct chunks/s",
            "gw chunks/s",
            "ratio",
            "direct TTFT p50/p95",
            "gw TTFT p50/p95",
            "+TTFT p50 ms",
            "ITL p50 d/g ms",
            "gw CPU µs/chunk",
            "errors d/g",
        ):
            t.add_column(col, justify="right")
        for row in rows:
            d, g, r = row.get("direct", {}), row.get("gateway", {}), row.get("ratios", {})
            t.add_row(
                str(row["concurrency"]),
                _f(d.get("chunks_per_s")),
                _f(g.get("chunks_per_s")),
                _f(r.get("chunk_throughput_ratio_vs_direct"), 3),
                f"{_f(d.get('ttft_p50_ms'))}/{_f(d.get('ttft_p95_ms'))}",
                f"{_f(g.get('ttft_p50_ms'))}/{_f(g.get('ttft_p95_ms'))}",
                _f(r.get("added_ttft_p50_ms"), 2),
                f"{_f(d.get('itl_p50_ms'), 2)}/{_f(g.get('itl_p50_ms'), 2)}",
                _f(g.get("cpu_us_per_chunk")),
                f"{d.get('errors', '-')}/{g.get('errors', '-')}",
            )
        out.append(t)
    if report.get("swap"):
        t = Table(title="Swap figures (seconds)", title_justify="left")
        t.add_column("figure")
        t.add_column("value", justify="right")
        for k, v in report["swap"].items():
            t.add_row(k, json.dumps(v) if isinstance(v, dict) else str(v))
        out.append(t)
    if report.get("supervisor"):
        out.extend(supervisor_tables(report["supervisor"]))
    return out


def supervisor_tables(figures: dict[str, Any]) -> list[Table]:
    t = Table(title="Supervisor: cold fake engine, direct vs ensure", title_justify="left")
    for col in (
        "health poll s",
        "runs",
        "direct spawn->served s",
        "ensure->served s",
        "overhead ms",
        "detection ms p50/max",
    ):
        t.add_column(col, justify="right")
    for row in figures.get("ensure_to_served", {}).values():
        t.add_row(
            _f(row.get("health_poll_interval_s"), 2),
            _f(row.get("runs")),
            _f(row.get("direct_spawn_to_served_s"), 3),
            _f(row.get("ensure_to_served_s"), 3),
            _f(row.get("supervisor_overhead_ms")),
            f"{_f(row.get('readiness_detection_ms_median'))}"
            f"/{_f(row.get('readiness_detection_ms_max'))}",
        )
    pc = figures.get("page_cache", {})
    p = Table(title=f"Page cache: {pc.get('file_mb', '?')} MB read", title_justify="left")
    for col in ("", "resident before", "read s", "MB/s"):
        p.add_column(col, justify="right")
    p.add_row(
        "evicted",
        _f(pc.get("fraction_evicted"), 3),
        _f(pc.get("read_evicted_s"), 3),
        _f(pc.get("read_evicted_mb_per_s")),
    )
    p.add_row(
        "warm",
        _f(pc.get("fraction_after_preload"), 3),
        _f(pc.get("read_warm_s"), 3),
        _f(pc.get("read_warm_mb_per_s")),
    )
    return [t, p]


def print_report(report: dict[str, Any], console: Console) -> None:
    for t in tables(report):
        console.print(t)


def write_json(report: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"bench-{stamp}.json"
    text = json.dumps(report, indent=2)
    path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    return path


def write_png(report: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [
        ("nonstream", "req_per_s", "non-streaming req/s"),
        ("nonstream", "latency_p50_ms", "non-streaming latency p50 (ms)"),
        ("stream", "chunks_per_s", "streaming chunks/s"),
        ("stream", "ttft_p50_ms", "streaming TTFT p50 (ms)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (mode, key, title) in zip(axes.flat, panels, strict=True):
        rows = report["results"].get(mode, [])
        for leg, style in (("direct", "o--"), ("gateway", "s-")):
            pts = [(r["concurrency"], r[leg].get(key)) for r in rows if leg in r]
            pts = [(c, v) for c, v in pts if v is not None]
            if pts:
                ax.plot([c for c, _ in pts], [v for _, v in pts], style, label=leg)
        ax.set_title(title)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle("Orchestra gateway vs direct upstream")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
