"""`python -m bench` (`make bench`): gateway vs direct over a concurrency sweep; `--swap` and
`--supervisor` add swap and supervisor figures."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench.args import parse_args
from bench.report import print_report, write_json, write_png
from bench.run import (
    REPO,
    BenchOptions,
    Leg,
    cpu_plan,
    fake_upstream,
    gateway_process,
    method,
    sweep,
    total_rounds,
)
from bench.supervisor_figures import supervisor_figures
from bench.swap import swap_figures
from orchestra.lifetime import spawn


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):  # under the checkout: relative, so a result names no machine
        return str(value.relative_to(REPO)) if value.is_relative_to(REPO) else str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def ensure_wrk(console: Console) -> None:
    """wrk is the non-streaming load generator; install Debian's when we are root with apt."""
    if shutil.which("wrk") or not shutil.which("apt-get"):
        return

    if os.geteuid() != 0:
        console.print("[yellow]wrk not found (not root): using the Python load generator")
        return
    console.print("installing wrk (apt-get) ...")
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, timeout=300, check=False
    )


def gateway_tree(rev: str | None, stack: contextlib.ExitStack) -> Path | None:
    """`rev`'s packages unpacked for this run (`--gateway-rev`, `--baseline-rev`); None when
    there is no revision: the installed gateway."""
    if rev is None:
        return None
    from bench.ab import unpack

    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-rev-")))
    return unpack(rev, work)


def run_sweep(
    opts: BenchOptions, cpus: dict[str, int | None], console: Console
) -> dict[str, list[dict[str, Any]]]:
    """Start the fake upstream and the gateway (unless aimed at real servers), then sweep."""
    with contextlib.ExitStack() as stack:
        upstream: str | None = None
        if opts.base_url is None:
            console.print("starting the fake upstream and the gateway ...")
            upstream = stack.enter_context(fake_upstream(opts, cpus["upstream"]))
            tree = gateway_tree(opts.gateway_rev, stack)
            gw_url, gw_pid = stack.enter_context(
                gateway_process(upstream, opts.model, cpus["gateway"], tree=tree)
            )
            legs = [Leg("direct", upstream), Leg("gateway", gw_url, gw_pid)]
            if opts.baseline_rev is not None:  # on the same core: only one leg runs at a time
                base = gateway_tree(opts.baseline_rev, stack)
                base_url, base_pid = stack.enter_context(
                    gateway_process(upstream, opts.model, cpus["gateway"], tree=base)
                )
                legs.append(Leg("baseline", base_url, base_pid))
            if opts.py_spy:
                spy = spawn(
                    [
                        "py-spy",
                        "record",
                        "-o",
                        opts.py_spy,
                        "--pid",
                        str(gw_pid),
                        "-r",
                        "200",
                        "--format",
                        "raw" if opts.py_spy.endswith(".txt") else "flamegraph",
                    ],
                    stdout=subprocess.DEVNULL,
                )

                def stop_spy() -> None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)

                stack.callback(stop_spy)
        else:
            legs = [Leg("gateway", opts.base_url)]
            if opts.direct_url:
                legs.insert(0, Leg("direct", opts.direct_url))
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("bench", total=total_rounds(opts, len(legs)))

            def step(what: str) -> None:
                progress.update(task, description=what)
                if progress.tasks[task].description != "bench":
                    progress.advance(task)

            results = sweep(opts, legs, cpus, upstream, step)
            progress.update(task, description="done")
    return results


def extra_figures(
    extras: tuple[str, ...], cpus: dict[str, int | None], console: Console, opts: BenchOptions
) -> dict[str, Any]:
    """The figures of issue 13 (ceiling vs nginx, workers, session, prefix-cache hits) and the
    streaming reference (CPU per relayed chunk vs nginx)."""
    from bench.affinity import session_figures
    from bench.ceiling import ceiling_figures
    from bench.prefix_cache import prefix_cache_figures
    from bench.stream_ceiling import stream_cpu_figures
    from bench.swap_open import SwapOpenOptions, swap_open_figures

    stack = contextlib.ExitStack()
    makers = {
        "ceiling": lambda: ceiling_figures(
            cpus,
            tree=gateway_tree(opts.gateway_rev, stack),
            baseline=gateway_tree(opts.baseline_rev, stack),
        ),
        "stream_ceiling": lambda: stream_cpu_figures(
            cpus,
            tree=gateway_tree(opts.gateway_rev, stack),
            baseline=gateway_tree(opts.baseline_rev, stack),
        ),
        "affinity": session_figures,
        "prefix_engines": prefix_cache_figures,
        "swap_open": lambda: swap_open_figures(
            SwapOpenOptions(duration_s=opts.swap_open_duration_s)
        ),
    }
    out: dict[str, Any] = {}
    with stack:
        for name in extras:
            console.print(f"measuring {name} ...")
            out[name] = makers[name]()
            console.print_json(data=out[name])
    return out


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGHUP (`timeout 390 make bench`, a closed terminal): unwind like Ctrl-C, so
    every leg's `with` stops what it started; were the bench killed outright, its children
    still get SIGTERM from the kernel (`orchestra.lifetime.spawn`)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    if "--batch" in (sys.argv[1:] if argv is None else argv):  # batch figures: bench/batch.py
        from bench.batch import main as batch_main

        return batch_main(sys.argv[1:] if argv is None else argv)
    opts = parse_args(argv)
    console = Console()
    if not console.is_terminal:  # CI logs: wide enough for the tables
        console = Console(width=160)
    if opts.use_wrk and opts.sweep:
        ensure_wrk(console)
    cpus = cpu_plan(opts.pin and opts.base_url is None)
    started = time.time()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    report["results"] = run_sweep(opts, cpus, console) if opts.sweep else {}
    if opts.swap:
        console.print("measuring swap figures ...")
        assert opts.supervisor_url
        report["swap"] = swap_figures(
            opts.supervisor_url, opts.model, opts.gateway_url, opts.model_path, opts.admin_token
        )
    if opts.supervisor:
        console.print("measuring supervisor figures (fake engine, real supervisor) ...")
        report["supervisor"] = supervisor_figures(opts.supervisor)
    report |= extra_figures(opts.extras, cpus, console, opts)
    if opts.sweep:
        report["method"] = method(opts, cpus)
    report["options"] = _jsonable(dataclasses.asdict(opts))
    # one flat dict per concurrency with both modes' ratios
    flat: dict[str, dict[str, Any]] = {}
    for mode in report["results"].values():
        for row in mode:
            if "ratios" in row:
                flat.setdefault(str(row["concurrency"]), {}).update(row["ratios"])
    report["ratios"] = flat
    report["elapsed_s"] = round(time.time() - started, 1)
    print_report(report, console)
    path = write_json(report, opts.out_dir)
    png = write_png(report, path.with_suffix(".png")) if report["results"] else None
    if png is not None:
        (opts.out_dir / "latest.png").write_bytes(png.read_bytes())
    no_png = " (no sweep: no PNG)" if not report["results"] else " (no matplotlib: no PNG)"
    console.print(f"wrote {path}" + (f" and {png}" if png else no_png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
