"""`python -m bench.tracing_cost [BASE]`: what tracing costs the gateway per request.

Legs on one pinned core, against one instant fake upstream, wrk at c=64 (non-streamed chats),
alternated round by round (A B C, C B A, ...) so noise hits all alike:
- `off`: this tree, no `tracing:` section (the default);
- `on`: this tree with `tracing: {sample_ratio: 1.0}` (or `--sample-ratio`) exporting every
  span over OTLP/HTTP to a collector that takes them (tests/otlp_sink.py, in this process:
  its CPU is not the gateway's; the gateway's encoding and posting, on the SDK's thread, are);
- `base` (when BASE is given, e.g. the commit before tracing): that revision's gateway, so
  `off` against `base` says what the tracing code costs when it is off.
The figures: req/s and the gateway's CPU µs per request (its process group's user+sys over the
round / requests answered), the one contention moves least.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.ab import unpack
from bench.ceiling import alternate
from bench.load import chat_body, have_wrk, run_wrk
from bench.run import CHAT, REPO, BenchOptions, _set_fake, cpu_plan, fake_upstream, gateway_process


def tracing_cost(
    base: str | None, seconds: float, rounds: int, ratio: float = 1.0
) -> dict[str, Any]:
    if not have_wrk():
        return {"skipped": "wrk not found"}
    sys.path.insert(0, str(REPO))
    from tests.otlp_sink import OtlpSink

    cpus = cpu_plan(pin=True)
    body = chat_body("bench", 1, False)
    with ExitStack() as stack:
        sink = stack.enter_context(OtlpSink())
        upstream = stack.enter_context(fake_upstream(BenchOptions(model="bench"), cpus["upstream"]))
        _set_fake(upstream, 0.0, 0.0)  # answers at once
        on = {
            "ORCHESTRA_TRACING__ENDPOINT": sink.url,
            "ORCHESTRA_TRACING__SAMPLE_RATIO": str(ratio),
        }
        gateways = {
            "off": stack.enter_context(gateway_process(upstream, "bench", cpus["gateway"])),
            "on": stack.enter_context(gateway_process(upstream, "bench", cpus["gateway"], env=on)),
        }
        if base is not None:
            tree = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-base-")))
            gateways["base"] = stack.enter_context(
                gateway_process(upstream, "bench", cpus["gateway"], tree=unpack(base, tree))
            )
        for url, _ in gateways.values():  # warm the pools
            run_wrk(url + CHAT, body, 64, 1.0, cpus["load"])
        rps, cost = alternate(
            {name: url for name, (url, _) in gateways.items()},
            lambda url: run_wrk(url + CHAT, body, 64, seconds, cpus["load"]),
            rounds,
            {name: pid for name, (_, pid) in gateways.items()},
        )
        spans = len(sink.received())
    return {
        "concurrency": 64,
        "sample_ratio": ratio,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "req_per_s": rps,
        "gateway_cpu_us_per_request": cost,
        "tracing_on_cpu_us_added": round(cost["on"] - cost["off"], 1),
        "spans_received": spans,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tracing_cost", description=__doc__)
    p.add_argument("base", nargs="?", help="a git revision to compare `off` against")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per round and leg")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    p.add_argument("--sample-ratio", type=float, default=1.0, help="the `on` leg's")
    args = p.parse_args(argv)
    figures = tracing_cost(args.base, args.seconds, args.rounds, args.sample_ratio)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
