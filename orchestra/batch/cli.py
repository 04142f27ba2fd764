"""`orchestra batch run|submit|status|download`.

`run` sends a dataset through a gateway directly (`orchestra/batch/run.py`); `submit`,
`status` and `download` are thin wrappers over the gateway's OpenAI Batch API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from orchestra.batch.data import ENDPOINTS, DataError, RequestBuilder
from orchestra.batch.run import RunOptions, run_dataset

DEFAULT_URL = "http://127.0.0.1:8000"


def add_batch_parser(sub: Any) -> None:
    batch = sub.add_parser("batch", help="batch inference: datasets and the OpenAI Batch API")
    verbs = batch.add_subparsers(dest="batch_command", required=True)

    run = verbs.add_parser("run", help="send a JSONL/CSV/Parquet dataset through a gateway")
    run.add_argument("input", type=Path)
    run.add_argument("--model", required=True)
    run.add_argument("--output", "-o", type=Path, required=True, help=".jsonl, .csv, .parquet")
    run.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="chat")
    run.add_argument("--template", help="prompt for plain rows, e.g. 'Label: {text}'")
    run.add_argument("--system", help="system message (chat)")
    run.add_argument("--id-column", help="column that identifies a row (default: its index)")
    run.add_argument("--max-tokens", type=int)
    run.add_argument("--temperature", type=float)
    run.add_argument("--top-p", type=float)
    run.add_argument("--seed", type=int)
    run.add_argument("--concurrency", type=int, default=16)
    run.add_argument("--retries", type=int, default=3, help="tries per row on 429/5xx/errors")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    run.add_argument("--priority", type=int, default=1000, help="admission priority (low=first)")
    run.add_argument("--resume", action="store_true", help="skip rows OUT already answered")
    run.add_argument("--quiet", "-q", action="store_true")
    _common(run)
    run.set_defaults(func=_run)

    submit = verbs.add_parser("submit", help="upload a batch JSONL and create a batch")
    submit.add_argument("input", type=Path)
    submit.add_argument("--endpoint", default="/v1/chat/completions")
    submit.add_argument("--window", default="24h")
    _common(submit)
    submit.set_defaults(func=_submit)

    status = verbs.add_parser("status", help="a batch's status and counts (or list batches)")
    status.add_argument("batch_id", nargs="?")
    _common(status)
    status.set_defaults(func=_status)

    download = verbs.add_parser("download", help="a batch's output (and error) file")
    download.add_argument("batch_id")
    download.add_argument("--output", "-o", type=Path, required=True)
    download.add_argument("--errors", type=Path, help="where the error file goes")
    _common(download)
    download.set_defaults(func=_download)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("ORCHESTRA_URL", DEFAULT_URL))
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))


def _run(args: argparse.Namespace) -> int:
    sampling = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    builder = RequestBuilder(
        args.model, args.endpoint, args.template, args.system, args.id_column, sampling
    )
    options = RunOptions(
        url=args.url,
        concurrency=args.concurrency,
        retries=args.retries,
        timeout_s=args.timeout,
        priority=args.priority,
        api_key=args.api_key,
        resume=args.resume,
        quiet=args.quiet,
    )
    try:
        summary = run_dataset(args.input, args.output, builder, options)
    except (DataError, FileExistsError) as exc:
        print(f"orchestra batch: {exc}", file=sys.stderr)
        return 2
    print(
        f"{summary.rows} rows in {summary.seconds:.1f}s ({summary.failed} failed, "
        f"{summary.skipped} already done), {summary.tokens} completion tokens -> {args.output}"
    )
    return 1 if summary.failed else 0


async def _call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> tuple[int, bytes]:
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    timeout = aiohttp.ClientTimeout(total=600)
    async with (
        aiohttp.ClientSession(headers=headers, timeout=timeout) as session,
        session.request(method, args.url.rstrip("/") + path, **kw) as resp,
    ):
        return resp.status, await resp.read()


def _json_or_die(status: int, body: bytes) -> Any:
    if status >= 400:
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = body[:500].decode(errors="replace")
        raise SystemExit(f"orchestra batch: HTTP {status}: {message}")
    return json.loads(body)


def _submit(args: argparse.Namespace) -> int:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", args.input.read_bytes(), filename=args.input.name)
    uploaded = _json_or_die(*asyncio.run(_call(args, "POST", "/v1/files", data=form)))
    body = {
        "input_file_id": uploaded["id"],
        "endpoint": args.endpoint,
        "completion_window": args.window,
    }
    batch = _json_or_die(*asyncio.run(_call(args, "POST", "/v1/batches", json=body)))
    print(batch["id"])
    return 0


def _status(args: argparse.Namespace) -> int:
    path = f"/v1/batches/{args.batch_id}" if args.batch_id else "/v1/batches?limit=100"
    got = _json_or_die(*asyncio.run(_call(args, "GET", path)))
    for batch in [got] if args.batch_id else got["data"]:
        counts = batch.get("request_counts") or {}
        print(
            f"{batch['id']}  {batch['status']:<11} {counts.get('completed', 0)}/"
            f"{counts.get('total', 0)} done, {counts.get('failed', 0)} failed"
        )
        for error in (batch.get("errors") or {}).get("data") or []:
            print(f"  line {error.get('line')}: {error.get('code')}: {error.get('message')}")
    return 0


def _download(args: argparse.Namespace) -> int:
    batch = _json_or_die(*asyncio.run(_call(args, "GET", f"/v1/batches/{args.batch_id}")))
    if batch["status"] not in ("completed", "expired", "cancelled"):
        print(f"orchestra batch: {args.batch_id} is {batch['status']}", file=sys.stderr)
        return 1
    for file_id, target in (
        (batch["output_file_id"], args.output),
        (batch["error_file_id"], args.errors),
    ):
        if file_id is None or target is None:
            continue
        status, body = asyncio.run(_call(args, "GET", f"/v1/files/{file_id}/content"))
        if status >= 400:
            _json_or_die(status, body)
        target.write_bytes(body)
        lines = body.count(b"\n")
        print(f"{target}: {lines} lines")
    return 0
