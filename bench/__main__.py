"""`python -m bench` (`make bench`): gateway vs direct over a concurrency sweep; `--swap` and
`--supervisor` add swap and supervisor figures."""

from __future__ import annotations

import argparse
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

from bench.report import print_report, write_json, write_png
from bench.run import (
    BenchOptions,
    Leg,
    cpu_plan,
    fake_upstream,
    gateway_process,
    method,
    sweep,
    total_rounds,
)
from bench.supervisor_figures import SupervisorBenchOptions, supervisor_figures
from bench.swap import swap_figures
from orchestra.lifetime import spawn


def parse_args(argv: list[str] | None = None) -> BenchOptions:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--concurrency", default="1,8,32,64,128,256", help="comma-separated sweep")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per point and leg")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per point")
    p.add_argument("--modes", default="nonstream,stream")
    p.add_argument("--base-url", help="an OpenAI-compatible server to bench instead of the fake")
    p.add_argument("--direct-url", help="with --base-url: the upstream to compare against")
    p.add_argument("--model", default="bench")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--stream-max-tokens", type=int, default=32)
    p.add_argument("--token-rate", type=float, default=200.0, help="fake, non-streaming")
    p.add_argument("--stream-token-rate", type=float, default=20.0, help="fake, streaming")
    p.add_argument("--ttft-ms", type=float, default=20.0, help="fake upstream's TTFT")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--no-wrk", action="store_true", help="python load generator only")
    p.add_argument("--swap", action="store_true", help="also measure swap figures")
    p.add_argument("--supervisor-url", default="http://127.0.0.1:8100")
    p.add_argument(
        "--admin-token",
        default=os.environ.get("ORCHESTRA_ADMIN_TOKEN"),
        help="--swap: the supervisor's admin token (default $ORCHESTRA_ADMIN_TOKEN)",
    )
    p.add_argument("--gateway-url", help="for the on-demand first request (default --base-url)")
    p.add_argument("--model-path", help="weights to evict/warm for the cold-start figures")
    p.add_argument("--out-dir", type=Path, default=BenchOptions().out_dir)
    p.add_argument(
        "--py-spy", help="record the gateway with py-spy (.svg flamegraph, .txt collapsed stacks)"
    )
    p.add_argument(
        "--supervisor",
        action="store_true",
        help="also measure supervisor figures (ensure-to-served, readiness detection, page cache)",
    )
    p.add_argument("--supervisor-only", action="store_true", help="--supervisor without the sweep")
    p.add_argument("--supervisor-runs", type=int, default=5, help="runs per poll interval")
    p.add_argument("--page-cache-mb", type=int, default=256, help="page-cache figure's file size")
    p.add_argument(
        "--scratch-dir", type=Path, help="where the page-cache file goes (default: system temp)"
    )
    p.add_argument(
        "--gateway-rev",
        help="run the gateway of this git revision (`.`: the working tree) instead of the "
        "installed one, e.g. the figures before a change",
    )
    p.add_argument("--ceiling", action="store_true", help="req/s ceiling: gateway vs nginx")
    p.add_argument("--affinity", action="store_true", help="session stickiness (fake engines)")
    p.add_argument(
        "--prefix-engines", action="store_true", help="prefix_aware vs round robin, 2 real engines"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: c=1,8, 1 s, 1 round; supervisor: 1 run at poll 0.1 s, 0.5 s startup, "
        "16 MB file",
    )
    a = p.parse_args(argv)
    opts = BenchOptions(
        concurrency=[int(x) for x in a.concurrency.split(",") if x],
        duration_s=a.duration,
        rounds=max(1, a.rounds),
        modes=tuple(m for m in a.modes.split(",") if m in ("nonstream", "stream")),
        base_url=a.base_url.rstrip("/") if a.base_url else None,
        direct_url=a.direct_url.rstrip("/") if a.direct_url else None,
        model=a.model,
        max_tokens=a.max_tokens,
        stream_max_tokens=a.stream_max_tokens,
        token_rate=a.token_rate,
        stream_token_rate=a.stream_token_rate,
        ttft_ms=a.ttft_ms,
        pin=not a.no_pin,
        use_wrk=not a.no_wrk,
        swap=a.swap,
        supervisor_url=a.supervisor_url,
        admin_token=a.admin_token,
        gateway_url=a.gateway_url or a.base_url,
        model_path=a.model_path,
        out_dir=a.out_dir,
        py_spy=a.py_spy,
        gateway_rev=a.gateway_rev,
        sweep=not a.supervisor_only,
    )
    opts.extras = tuple(
        name for name in ("ceiling", "affinity", "prefix_engines") if getattr(a, name)
    )
    if a.supervisor or a.supervisor_only:
        opts.supervisor = SupervisorBenchOptions(
            runs=max(1, a.supervisor_runs), page_cache_mb=a.page_cache_mb, scratch_dir=a.scratch_dir
        )
    if a.quick:
        opts.concurrency, opts.duration_s, opts.rounds = [1, 8], 1.0, 1
        opts.stream_max_tokens, opts.stream_token_rate = 8, 50.0
        if opts.supervisor:
            opts.supervisor.runs, opts.supervisor.startup_s = 1, 0.5
            opts.supervisor.poll_intervals = (0.1,)
            opts.supervisor.page_cache_mb = min(opts.supervisor.page_cache_mb, 16)
    return opts


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def ensure_wrk(console: Console) -> None:
    """wrk is the non-streaming load generator; install Debian's when we are root with apt."""
    if shutil.which("wrk") or not shutil.which("apt-get"):
        return
    import os

    if os.geteuid() != 0:
        console.print("[yellow]wrk not found (not root): using the Python load generator")
        return
    console.print("installing wrk (apt-get) ...")
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, timeout=300, check=False
    )


def gateway_tree(opts: BenchOptions, stack: contextlib.ExitStack) -> Path | None:
    """`--gateway-rev`: that revision's packages unpacked for this run (None: the installed)."""
    if opts.gateway_rev is None:
        return None
    from bench.ab import unpack

    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-rev-")))
    return unpack(opts.gateway_rev, work)


def run_sweep(
    opts: BenchOptions, cpus: dict[str, int | None], console: Console
) -> dict[str, list[dict[str, Any]]]:
    """Start the fake upstream and the gateway (unless aimed at real servers), then sweep."""
    with contextlib.ExitStack() as stack:
        upstream: str | None = None
        if opts.base_url is None:
            console.print("starting the fake upstream and the gateway ...")
            upstream = stack.enter_context(fake_upstream(opts, cpus["upstream"]))
            tree = gateway_tree(opts, stack)
            gw_url, gw_pid = stack.enter_context(
                gateway_process(upstream, opts.model, cpus["gateway"], tree=tree)
            )
            legs = [Leg("direct", upstream), Leg("gateway", gw_url, gw_pid)]
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
    """The figures of issue 13 (ceiling vs nginx, workers, session, prefix-cache hits)."""
    from bench.affinity import prefix_figures, session_figures
    from bench.ceiling import ceiling_figures

    stack = contextlib.ExitStack()
    makers = {
        "ceiling": lambda: ceiling_figures(cpus, tree=gateway_tree(opts, stack)),
        "affinity": session_figures,
        "prefix_engines": prefix_figures,
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
