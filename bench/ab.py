"""`python -m bench.ab BASE [OTHER ...]`: is the hot path slower? Gateways built from git
revisions (or `.`, the working tree) side by side on one pinned core, against one instant fake
upstream, wrk at c=64; legs alternate round by round (A B, B A, ...) so noise hits all alike.

Two figures per leg and mode (non-streaming, and 16-token streams):
- req/s, which on a shared machine swings with whatever else runs;
- the gateway's CPU µs per request (user+sys of its process group over the round / requests
  answered), which contention moves far less; the median and the minimum over rounds are the
  ones to compare.

Each revision's packages are unpacked into a temporary folder laid out as the installed
`orchestra` package (gateway/ and supervisor/ inside it) and put first on PYTHONPATH, run from
a folder without an `orchestra/` of its own, so the editable install cannot shadow it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.cpu import cpu_seconds
from bench.load import chat_body, have_wrk, run_wrk
from bench.run import (
    CHAT,
    REPO,
    BenchOptions,
    _set_fake,
    cpu_plan,
    fake_upstream,
    gateway_process,
)

_PACKAGES = ("orchestra", "gateway", "supervisor")


def unpack(rev: str, into: Path) -> Path:
    """The packages at `rev` (`.`: the working tree) as an importable `orchestra` in `into`."""
    if rev == ".":
        for name in _PACKAGES:
            shutil.copytree(REPO / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, *_PACKAGES],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        with tempfile.TemporaryFile() as f:
            f.write(archive)
            f.seek(0)
            with tarfile.open(fileobj=f) as tar:
                tar.extractall(into, filter="data")
    for name in ("gateway", "supervisor"):
        inside = into / "orchestra" / name
        if inside.is_symlink():  # revisions before package-dir linked them into orchestra/
            inside.unlink()
        (into / name).rename(inside)
    return into


def gateway_from(tree: Path, upstream: str, cpu: int | None) -> Any:
    """The gateway of the packages unpacked in `tree` (bench/run.py's launcher)."""
    return gateway_process(upstream, "bench", cpu, tree=tree)


def _summary(rps: list[float], cost: list[float]) -> dict[str, Any]:
    ordered = sorted(cost)
    return {
        "req_per_s_mean": round(sum(rps) / len(rps), 1),
        "req_per_s_max": max(rps),
        "cpu_us_per_req_median": ordered[len(ordered) // 2],
        "cpu_us_per_req_min": ordered[0],
        "rounds_req_per_s": rps,
        "rounds_cpu_us_per_req": cost,
    }


def compare(revs: list[str], seconds: float, rounds: int) -> dict[str, Any]:
    cpus = cpu_plan(True)
    bodies = {"nonstream": chat_body("bench", 1, False), "stream": chat_body("bench", 16, True)}
    out: dict[str, Any] = {"seconds_per_round": seconds, "rounds": rounds, "concurrency": 64}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ab-")))
        trees = {rev: unpack(rev, work / f"tree{i}") for i, rev in enumerate(revs)}
        upstream = stack.enter_context(fake_upstream(BenchOptions(model="bench"), cpus["upstream"]))
        _set_fake(upstream, 0.0, 0.0)  # answers at once
        legs = {
            rev: stack.enter_context(gateway_from(tree, upstream, cpus["gateway"]))
            for rev, tree in trees.items()
        }
        for mode, body in bodies.items():
            rps: dict[str, list[float]] = {rev: [] for rev in revs}
            cost: dict[str, list[float]] = {rev: [] for rev in revs}
            for url, _ in legs.values():
                run_wrk(url + CHAT, body, 64, 1, cpus["load"])  # warm the pools
            for i in range(rounds):
                for rev in revs if i % 2 == 0 else revs[::-1]:
                    url, pid = legs[rev]
                    before = cpu_seconds(pid)
                    result = run_wrk(url + CHAT, body, 64, seconds, cpus["load"])
                    used = cpu_seconds(pid) - before
                    if result.errors:
                        raise RuntimeError(f"{rev}: {result.errors} errors in a {mode} round")
                    rps[rev].append(round(result.requests / (result.window_s or 1.0), 1))
                    cost[rev].append(round(1e6 * used / max(1, result.requests), 1))
            out[mode] = {rev: _summary(rps[rev], cost[rev]) for rev in revs}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("revs", nargs="+", help="git revisions to compare; `.` is the working tree")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per round and leg")
    p.add_argument("--rounds", type=int, default=12, help="alternating rounds per mode")
    a = p.parse_args(argv)
    if not have_wrk():
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    print(json.dumps(compare(a.revs, a.seconds, max(1, a.rounds)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
