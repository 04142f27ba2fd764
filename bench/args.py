"""`python -m bench`'s command line, read into `BenchOptions`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.run import BenchOptions
from bench.supervisor_figures import SupervisorBenchOptions


def parse_args(argv: list[str] | None = None) -> BenchOptions:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="gateway vs direct over a concurrency sweep; --swap and --supervisor add "
        "swap and supervisor figures",
    )
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
    p.add_argument(
        "--stream-stagger-s",
        type=float,
        default=None,
        help="spread stream starts over seconds (default: one fake stream's length; 0 with "
        "--base-url); TTFT is sampled after the ramp",
    )
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
    p.add_argument(
        "--baseline-rev",
        help="also measure the gateway of this git revision as a `baseline` leg, alternated "
        "round by round with the others against the same upstream (before/after in one run)",
    )
    p.add_argument("--ceiling", action="store_true", help="req/s ceiling: gateway vs nginx")
    p.add_argument(
        "--stream-ceiling",
        action="store_true",
        help="CPU per relayed SSE chunk at 256 paced streams: gateway vs nginx",
    )
    p.add_argument("--affinity", action="store_true", help="session stickiness (fake engines)")
    p.add_argument(
        "--prefix-engines",
        action="store_true",
        help="2 real engines, caches that overflow one: rr vs session vs prefix_aware vs kv_aware",
    )
    p.add_argument(
        "--swap-open",
        action="store_true",
        help="open-loop swaps: 3 models on one slot, Poisson arrivals, old vs new swap policy",
    )
    p.add_argument(
        "--swap-open-duration", type=float, default=40.0, help="--swap-open: arrivals per policy"
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
        stream_stagger_s=a.stream_stagger_s,
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
        baseline_rev=a.baseline_rev,
        sweep=not a.supervisor_only,
        swap_open_duration_s=a.swap_open_duration,
    )
    opts.extras = tuple(
        name
        for name in ("ceiling", "stream_ceiling", "affinity", "prefix_engines", "swap_open")
        if getattr(a, name)
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
