"""The soak's figures (`bench/soak.py`): per series (RSS, FDs, tasks, gc objects, threads of the
gateway and the supervisor) the least-squares slope after warm-up, per 10 minutes; per bounded
map its largest size against its bound; and the quiet samples (traffic paused, nothing in
flight) after warm-up and at the end, which is where "flat" is judged for FDs and tasks: a
sample under traffic counts the connections and tasks of the requests in flight with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SERIES = ("rss_mb", "fds", "tasks", "gc_objects", "threads")
RSS_GOAL_MB_PER_10MIN = 1.0  # issue 31's goal for the 30-minute soak


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, v), in v per second; None under two points."""
    n = len(points)
    if n < 2:
        return None
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def series_figures(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """{process: {series: {slope_per_10min, first, last, min, max}}} after warm-up."""
    out: dict[str, Any] = {}
    after = [s for s in samples if s["t"] >= warmup_s]
    for proc in ("gateway", "supervisor"):
        out[proc] = {}
        for name in SERIES:
            points = [(s["t"], float(s[proc][name])) for s in after if name in s[proc]]
            if not points:
                continue
            per_s = slope(points)
            values = [v for _, v in points]
            out[proc][name] = {
                "slope_per_10min": None if per_s is None else round(per_s * 600, 3),
                "first": values[0],
                "last": values[-1],
                "min": min(values),
                "max": max(values),
                "points": len(points),
            }
    return out


def map_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """{process.map: {max_size, last_size, bound, within}} over every sample."""
    out: dict[str, Any] = {}
    for s in samples:
        for proc in ("gateway", "supervisor"):
            for name, m in s[proc].get("maps", {}).items():
                key = f"{proc}.{name}"
                seen = out.setdefault(key, {"max_size": 0, "bound": m["bound"], "within": True})
                seen["max_size"] = max(seen["max_size"], m["size"])
                seen["last_size"] = m["size"]
                seen["bound"] = max(seen["bound"], m["bound"])
                seen["within"] = seen["within"] and m["size"] <= m["bound"]
    return dict(sorted(out.items()))


def quiet_figures(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """The quiet samples side by side: {process: {series: [after warm-up, at the end]}}."""
    return {
        proc: {name: [start[proc][name], end[proc][name]] for name in SERIES if name in end[proc]}
        for proc in ("gateway", "supervisor")
    }


def _f(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as tables: the run, the slopes, the quiet samples, the maps."""
    run = report["run"]
    lines = [
        f"# Soak: {run['minutes']} min of mixed traffic (`python -m bench.soak`)",
        "",
        f"- {run['requests']} requests ({run['requests_per_s']:.1f}/s), {run['samples']} samples "
        f"every {run['interval_s']} s, warm-up {run['warmup_s']} s; batches {run['batches']}, "
        f"swaps {run['swaps']}",
        f"- load: {run['load']}",
        "",
        "## Slopes after warm-up (least squares, per 10 minutes)",
        "",
        "| process | series | slope / 10 min | first | last | min | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for proc, series in report["series"].items():
        for name, f in series.items():
            lines.append(
                f"| {proc} | {name} | {_f(f['slope_per_10min'])} | {_f(f['first'])} | "
                f"{_f(f['last'])} | {_f(f['min'])} | {_f(f['max'])} |"
            )
    lines += [
        "",
        "## Quiet samples (traffic paused, nothing in flight): after warm-up, at the end",
        "",
        "| process | series | after warm-up | end |",
        "|---|---|---|---|",
    ]
    for proc, series in report["quiet"].items():
        for name, (a, b) in series.items():
            lines.append(f"| {proc} | {name} | {_f(a)} | {_f(b)} |")
    lines += ["", "## Bounded maps: largest size seen against the bound", ""]
    lines += ["| map | max size | last size | bound | within |", "|---|---|---|---|---|"]
    for name, m in report["maps"].items():
        lines.append(
            f"| {name} | {m['max_size']} | {m.get('last_size', '-')} | {m['bound']} | "
            f"{'yes' if m['within'] else 'NO'} |"
        )
    lines += ["", "## Outcomes (kind and status)", "", "| outcome | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(report["outcomes"].items())]
    return "\n".join(lines) + "\n"
