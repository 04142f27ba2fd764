"""`orchestra batch run`: a dataset through a gateway, bounded concurrency, retries, a progress
bar (rows/s, tokens/s, ETA) and `--resume`.

Rows are sent at the batch priority (`x-orchestra-priority`), so interactive traffic on the
same gateway goes first. Each result is appended to OUT as it arrives: an interrupted run
loses nothing it finished, and `--resume` skips every row OUT already answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from orchestra.batch.data import RequestBuilder, ResultWriter, read_rows, result_row

_RETRY = frozenset({429, 500, 502, 503, 504})


@dataclass
class RunOptions:
    url: str
    concurrency: int = 16
    retries: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 600.0
    priority: int | None = 1000
    priority_header: str = "x-orchestra-priority"
    api_key: str | None = None
    resume: bool = False
    quiet: bool = False


@dataclass
class Summary:
    rows: int = 0
    skipped: int = 0
    failed: int = 0
    tokens: int = 0
    seconds: float = 0.0


def run_dataset(source: Path, out: Path, builder: RequestBuilder, options: RunOptions) -> Summary:
    if not options.resume and out.exists() and out.stat().st_size:
        raise FileExistsError(f"{out} exists: use --resume to continue it, or remove it")
    rows = [(builder.custom_id(row, i), row) for i, row in enumerate(read_rows(source))]
    writer = ResultWriter(out)
    done = writer.done_ids() if options.resume else set()
    todo = [(custom_id, row) for custom_id, row in rows if custom_id not in done]
    summary = Summary(skipped=len(rows) - len(todo))
    try:
        asyncio.run(_send_all(todo, writer, builder, options, summary))
    finally:
        writer.close()
    return summary


async def _send_all(
    todo: list[tuple[str, dict[str, Any]]],
    writer: ResultWriter,
    builder: RequestBuilder,
    options: RunOptions,
    summary: Summary,
) -> None:
    headers = {"content-type": "application/json"}
    if options.api_key:
        headers["authorization"] = f"Bearer {options.api_key}"
    if options.priority is not None:
        headers[options.priority_header] = str(options.priority)
    started = time.monotonic()
    progress = Progress(
        TextColumn("[bold]batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True, quiet=options.quiet),
    )
    timeout = aiohttp.ClientTimeout(total=options.timeout_s)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        with progress:
            task = progress.add_task("rows", total=len(todo), rate="")
            rows: Iterator[tuple[str, dict[str, Any]]] = iter(todo)

            async def worker() -> None:
                for custom_id, row in rows:
                    result = await send_row(session, options, builder, custom_id, row)
                    writer.write(result)
                    summary.rows += 1
                    summary.failed += result["error"] is not None
                    summary.tokens += int(result.get("completion_tokens") or 0)
                    elapsed = max(time.monotonic() - started, 1e-6)
                    rate = (
                        f"{summary.rows / elapsed:.1f} rows/s {summary.tokens / elapsed:.0f} tok/s"
                    )
                    progress.update(task, advance=1, rate=rate)

            await asyncio.gather(*(worker() for _ in range(max(1, options.concurrency))))
    summary.seconds = time.monotonic() - started


async def send_row(
    session: aiohttp.ClientSession,
    options: RunOptions,
    builder: RequestBuilder,
    custom_id: str,
    row: dict[str, Any],
) -> dict[str, Any]:
    path, body = builder.request(row)
    status, reply = 0, None
    error: str | None = "not sent"
    for attempt in itertools.count(1):
        try:
            async with session.post(options.url.rstrip("/") + path, json=body) as resp:
                status = resp.status
                reply = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            status, reply, error = 0, None, f"{type(exc).__name__}: {exc}"
        else:
            error = None
            if status >= 400:
                message = reply.get("error", {}) if isinstance(reply, dict) else {}
                error = str(message.get("message") if isinstance(message, dict) else reply)
        retry = status == 0 or status in _RETRY
        if not retry or attempt >= options.retries:
            break
        await asyncio.sleep(options.backoff_s * attempt)
    return result_row(row, custom_id, status, reply, error)
