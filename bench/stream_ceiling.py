"""The streaming reference: CPU per relayed SSE chunk, the gateway against nginx, one run.

The sweep's figure (gateway CPU per chunk) moves with the machine: the same tree read 46-55 µs
on one VM and 113-118 µs on another, where even a bare byte-copying pipe costs 44-48 µs. So the
figure is also measured against a reference under the same load, as req/s is against nginx
(`bench/ceiling.py`):
- nginx: Debian's nginx, one worker, `proxy_pass` with upstream keep-alive and
  `proxy_buffering off` (each upstream chunk written on as it comes, as the gateway does),
  pinned to the gateway's core;
- asgi_floor: the least an ASGI relay on the gateway's server costs (`bench/asgi_floor.py`:
  uvicorn, the gateway's upstream client, no features), pinned to the same core;
- gateway: one worker, pinned to the same core (and `baseline`: another revision's gateway).
The load is the sweep's stream load (paced streams started spread over one stream's length,
bench/load.py) on the other core; legs alternate round by round (A B C, C B A, ...). CPU is
each leg's process group's user+sys from /proc over its rounds, per SSE data event received.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.asgi_floor import asgi_floor
from bench.ceiling import alternate, ensure_nginx, nginx_proxy
from bench.run import (
    BenchOptions,
    _set_fake,
    fake_upstream,
    gateway_process,
    run_round,
    stream_stagger_s,
)


def stream_cpu_figures(
    cpus: dict[str, int | None],
    concurrency: int = 256,
    seconds: float = 6.0,
    rounds: int = 2,
    tree: Path | None = None,  # the gateway's packages unpacked there (`--gateway-rev`)
    baseline: Path | None = None,  # also this tree's gateway, as `baseline` (`--baseline-rev`)
) -> dict[str, Any]:
    opts = BenchOptions(model="bench")
    nginx = ensure_nginx()
    if nginx is None:
        return {"skipped": "nginx not found"}
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "seconds_per_round": seconds,
        "tokens_per_stream": opts.stream_max_tokens,
        "token_rate": opts.stream_token_rate,
        "stagger_s": stream_stagger_s(opts),
    }
    with ExitStack() as stack:
        upstream = stack.enter_context(fake_upstream(opts, cpus["upstream"]))
        _set_fake(upstream, opts.stream_token_rate, opts.ttft_ms)
        legs: dict[str, tuple[str, int]] = {}  # name: (URL, process group)
        legs["nginx"] = stack.enter_context(nginx_proxy(nginx, upstream, cpus["gateway"]))
        legs["asgi_floor"] = stack.enter_context(asgi_floor(upstream, cpus["gateway"]))
        legs["gateway"] = stack.enter_context(
            gateway_process(upstream, "bench", cpus["gateway"], tree=tree)
        )
        if baseline is not None:  # the same core: one leg runs at a time
            legs["baseline"] = stack.enter_context(
                gateway_process(upstream, "bench", cpus["gateway"], tree=baseline)
            )
        for url, _ in legs.values():  # warm the upstream pools (not counted)
            run_round(opts, "stream", url, 16, 1.0, cpus["load"])
        chunks_per_s, per_chunk = alternate(
            {name: url for name, (url, _) in legs.items()},
            lambda url: run_round(opts, "stream", url, concurrency, seconds, cpus["load"]),
            rounds,
            {name: group for name, (_, group) in legs.items()},
            count=lambda result: result.chunks,
        )
    out["chunks_per_s"] = chunks_per_s
    out["cpu_us_per_chunk"] = per_chunk
    out["gateway_vs_nginx"] = round(per_chunk["gateway"] / max(0.1, per_chunk["nginx"]), 2)
    out["asgi_floor_vs_nginx"] = round(per_chunk["asgi_floor"] / max(0.1, per_chunk["nginx"]), 2)
    out["gateway_vs_asgi_floor"] = round(
        per_chunk["gateway"] / max(0.1, per_chunk["asgi_floor"]), 2
    )
    if baseline is not None:
        out["baseline_vs_nginx"] = round(per_chunk["baseline"] / max(0.1, per_chunk["nginx"]), 2)
    return out


if __name__ == "__main__":
    import json

    from bench.run import cpu_plan

    print(json.dumps(stream_cpu_figures(cpu_plan(True)), indent=2))
