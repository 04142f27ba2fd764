"""`python -m bench --batch` (`make bench BENCH_ARGS=--batch`): batch figures on the real CPU
engine (SmolLM2), written to bench/results/batch-<time>.json.

- the same rows through the gateway's Batch API vs vLLM's own `run_batch` (its processing time:
  from its "Running batch" progress bar to its exit, so its model load is not counted);
- interactive chat p50 while a batch runs vs idle;
- the gateway SIGKILLed at 50% and restarted: rows run twice (from vLLM's
  `request_success_total`, which counts finished requests, not the ones a dead client aborted)
  and rows lost (input rows missing from the output and error files).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.batch_procs import (
    ENGINE_ARGS,
    ENGINE_ENV,
    ENGINE_PY,
    MODEL,
    REPO,
    Proc,
    free_port,
    start_engine,
    start_gateway,
    wait_for,
)
from orchestra.health import wait_healthy_sync
from orchestra.lifetime import spawn, stop_group
from tests.conftest import scrape_total


def _rows(n: int, max_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Write about the number {i}."}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            },
        }
        for i in range(n)
    ]


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _submit(url: str, rows: list[dict[str, Any]]) -> str:
    up = httpx.post(
        url + "/v1/files",
        files={"file": ("in.jsonl", _jsonl(rows))},
        data={"purpose": "batch"},
        timeout=60,
    ).json()
    batch = httpx.post(
        url + "/v1/batches",
        json={
            "input_file_id": up["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        timeout=60,
    ).json()
    return str(batch["id"])


def _batch(url: str, batch_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/v1/batches/{batch_id}", timeout=10).json())


def _chat_ms(url: str) -> float:
    started = time.perf_counter()
    reply = httpx.post(
        url + "/v1/chat/completions",
        timeout=300,
        json={
            "model": MODEL,
            "max_tokens": 16,
            "temperature": 0,
            "ignore_eos": True,
            "messages": [{"role": "user", "content": "Say something short."}],
        },
    )
    reply.raise_for_status()
    return (time.perf_counter() - started) * 1000


def _successes(engine_url: str) -> float:
    return scrape_total(engine_url, "vllm:request_success_total")


def _run_batch_seconds(rows: list[dict[str, Any]], tmp: Path) -> dict[str, float]:
    """vLLM's own offline runner on the same rows: (processing s, total s incl. load)."""
    src, out = tmp / "vllm_in.jsonl", tmp / "vllm_out.jsonl"
    src.write_bytes(_jsonl(rows))
    argv = [
        str(ENGINE_PY),
        "-m",
        "vllm.entrypoints.openai.run_batch",
        "-i",
        str(src),
        "-o",
        str(out),
        "--model",
        str(REPO / "models" / "smollm2"),
        "--served-model-name",
        MODEL,
        *ENGINE_ARGS,
    ]
    started = time.monotonic()
    proc = spawn(argv, cwd=REPO, stdout=subprocess.PIPE, env={**os.environ, **ENGINE_ENV})
    assert proc.stdout is not None
    running_at = None
    buffer = b""
    try:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            buffer = (buffer + chunk)[-4096:]
            if running_at is None and b"Running batch" in buffer:
                running_at = time.monotonic()
    finally:
        stop_group(proc, 30.0)  # it has exited (EOF), unless the bench is being stopped
    ended = time.monotonic()
    done = sum(1 for _ in out.open()) if out.exists() else 0
    return {
        "processing_s": round(ended - (running_at or started), 2),
        "total_s": round(ended - started, 2),
        "rows_out": done,
        "exit": proc.returncode,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench --batch")
    p.add_argument("--batch", action="store_true")
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--probes", type=int, default=8, help="interactive requests per phase")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    a = p.parse_args(argv)
    # SIGTERM (a CI timeout) unwinds through the `finally`s: no engine or gateway is left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = _rows(a.rows, a.max_tokens)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": a.rows,
        "max_tokens": a.max_tokens,
        "model": "SmolLM2-135M (CPU)",
    }
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as name:
        tmp = Path(name)
        engine_port = free_port()
        engine_url = f"http://127.0.0.1:{engine_port}"
        engine = start_engine(engine_port, tmp)
        gateways: list[Proc] = []
        try:
            wait_healthy_sync(engine_url, timeout_s=600, interval_s=0.2, probe_timeout_s=2)
            gw, url = start_gateway(engine_url, tmp / "store", tmp, "gw1")
            gateways.append(gw)
            _chat_ms(url)  # warm-up
            idle = [_chat_ms(url) for _ in range(a.probes)]
            started = time.monotonic()
            batch_id = _submit(url, rows)
            during: list[float] = []
            while _batch(url, batch_id)["status"] not in ("completed", "failed"):
                if len(during) < a.probes:
                    during.append(_chat_ms(url))
                else:
                    time.sleep(0.2)
            done = _batch(url, batch_id)
            # The gateway's own timestamps: a probe still running when the batch ends must not
            # stretch the batch's time (whole seconds; fine at the minutes this takes).
            api_s = max(1, done["completed_at"] - done["created_at"])
            report["batch_api"] = {
                "seconds": api_s,
                "client_seconds": round(time.monotonic() - started, 2),
                "counts": done["request_counts"],
                "output_tokens": (done.get("usage") or {}).get("output_tokens"),
                "rows_per_s": round(a.rows / api_s, 2),
            }
            report["interactive_p50_ms"] = {
                "idle": round(statistics.median(idle), 1),
                "during_batch": round(statistics.median(during), 1) if during else None,
                "probes": [len(idle), len(during)],
            }
            if during:
                report["interactive_p50_ratio"] = round(
                    statistics.median(during) / statistics.median(idle), 2
                )

            # SIGKILL at 50%, restart on the same store.
            before = _successes(engine_url)
            batch_id = _submit(url, rows)
            wait_for(
                lambda: _batch(url, batch_id)["request_counts"]["completed"] >= a.rows // 2,
                900,
                "half the rows",
            )
            gw.kill(signal.SIGKILL)
            gw, url = start_gateway(engine_url, tmp / "store", tmp, "gw2")
            gateways.append(gw)
            final = wait_for(
                lambda: (b := _batch(url, batch_id))["status"] == "completed" and b,
                900,
                "resumed batch",
            )
            time.sleep(1.0)  # let the engine's counters settle
            ran = _successes(engine_url) - before
            answered = set()
            for key in ("output_file_id", "error_file_id"):
                if final[key]:
                    text = httpx.get(f"{url}/v1/files/{final[key]}/content", timeout=60).text
                    answered |= {json.loads(x)["custom_id"] for x in text.splitlines() if x}
            report["sigkill_at_50pct"] = {
                "rows_run_twice": int(ran) - a.rows,
                "rows_lost": a.rows - len(answered & {r["custom_id"] for r in rows}),
                "engine_successes": int(ran),
            }
        finally:
            for g in gateways:
                g.kill()
            engine.kill()
        report["vllm_run_batch"] = _run_batch_seconds(rows, tmp)
    vllm_s = report["vllm_run_batch"]["processing_s"]
    report["throughput_ratio_vs_run_batch"] = round(vllm_s / report["batch_api"]["seconds"], 3)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = a.out_dir / f"batch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0
