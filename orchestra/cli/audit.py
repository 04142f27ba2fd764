"""`orchestra audit tail|query`: the gateway's audit trail (`gateway.audit`, one JSON line per
request and admin action), read from its files: the live one and the rotated ones beside it.
Run it where the gateway writes them (or give `--path`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestra.config import ConfigError, load_config

if TYPE_CHECKING:
    from orchestra.gateway.audit.read import Record

FOLLOW_INTERVAL_S = 0.25  # `tail -f`: how often it looks for new lines
_STATUS_STYLE = {"2": "green", "3": "cyan", "4": "yellow", "5": "red"}


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit trail: requests and admin actions")
    actions = audit.add_subparsers(dest="audit_action", required=True)
    tail = actions.add_parser("tail", help="the last lines; -f: and new ones as they come")
    tail.add_argument("-n", "--lines", type=int, default=20)
    tail.add_argument("-f", "--follow", action="store_true", help="print new lines too")
    query = actions.add_parser("query", help="the lines of a key, model, status, since ...")
    query.add_argument("--since", default="1h", help="1h, 30m, 7d or an ISO date (default 1h)")
    query.add_argument(
        "--model", default=None, help="the model asked or served, or an admin action's target"
    )
    query.add_argument("--status", default=None, help="200, 4xx, 5xx, ...")
    query.add_argument("--limit", type=int, default=None, help="the last N matching lines")
    for cmd in (tail, query):
        cmd.add_argument("--key", default=None, help="one key's name")
        cmd.add_argument("--kind", choices=["request", "admin", "batch_row"], default=None)
        cmd.add_argument("-o", "--output", choices=["table", "json"], default="table")
        cmd.add_argument("--path", default=None, help="the live file (default from config)")
        cmd.add_argument("--config", default="configs/vllm_config.yaml")
        cmd.set_defaults(func=main)


def _path(args: argparse.Namespace) -> Path:
    if args.path:
        return Path(args.path)
    try:
        audit = load_config(args.config).gateway.audit
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}\n(or give the audit file with --path)") from None
    if audit is None:
        raise SystemExit(f"error: {args.config} has no gateway.audit; give the file with --path")
    return audit.path


def main(args: argparse.Namespace) -> int:
    # Imported here: every `orchestra` command builds this parser, few read the trail.
    from orchestra.gateway.audit.read import Filter, follow, last, records, since

    path = _path(args)
    if args.audit_action == "tail":
        keep = Filter(key=args.key, kind=args.kind)
        count = max(args.lines, 0)
        if not args.follow:
            _print(args.output, last(path, count, keep), table=True)
            return 0
        try:
            for record in follow(path, keep, FOLLOW_INTERVAL_S, history=count):
                _print(args.output, [record], table=False)
        except KeyboardInterrupt:
            pass
        return 0
    try:
        start = since(args.since, time.time())
    except ValueError as exc:
        print(f"error: --since: {exc}", file=sys.stderr)
        return 2
    keep = Filter(key=args.key, since=start, model=args.model, status=args.status, kind=args.kind)
    found = (
        last(path, args.limit, keep)
        if args.limit is not None
        else [r for r in records(path) if keep(r)]
    )
    _print(args.output, found, table=True)
    return 0


def _print(output: str, found: Iterable[Record], table: bool) -> None:
    if output == "json":
        for record in found:
            print(json.dumps(record), flush=True)
        return
    console = Console()
    if not table:  # one line each: `tail -f`
        for record in found:
            console.print(" ".join(_cells(record)), highlight=False)
        sys.stdout.flush()  # a line as it comes, through a pipe too
        return
    view = Table()
    for name in ("time", "key / who", "client", "request", "model", "status", "tokens", "ms"):
        view.add_column(name, justify="right" if name in ("tokens", "ms") else "left")
    for record in found:
        view.add_row(*_cells(record))
    console.print(view)


def _cells(r: Record) -> list[str]:
    """time, key (or who, for an admin action), client, what, model, status, tokens, ms."""
    status = str(r.get("status", ""))
    style = _STATUS_STYLE.get(status[:1], "")
    shown = f"[{style}]{status}[/]" if style else status
    if r.get("error"):
        shown += f" {escape(str(r['error']))}"
    if r.get("kind") == "admin":
        what = f"{r.get('action') or r.get('method')} {r.get('target') or r.get('path')}"
        if r.get("adapter"):
            what += f" {r['adapter']}"
        who = str(r.get("who", ""))
    else:
        what = f"{r.get('method', 'BATCH')} {r.get('path', '')}"
        who = str(r.get("key") or "-")
    model = str(r.get("model") or "")
    served = r.get("served_by")
    if served and served != model:
        model += f" -> {served}"
    attempts = r.get("attempts")
    retried = f"{attempts} attempts" if isinstance(attempts, int) and attempts > 1 else None
    marks = [m for m in (r.get("cache"), "fallback" if r.get("fallback") else None, retried) if m]
    if marks:
        model += f" ({', '.join(marks)})"
    tokens = ""
    if r.get("prompt_tokens") is not None or r.get("completion_tokens") is not None:
        tokens = f"{r.get('prompt_tokens') or 0}+{r.get('completion_tokens') or 0}"
    return [
        str(r.get("time", ""))[:23],
        escape(who),
        str(r.get("client") or ""),
        escape(what),
        escape(model),
        shown,
        tokens,
        f"{r.get('latency_ms', 0):.0f}",
    ]
