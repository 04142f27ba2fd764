"""`orchestra status|load|unload|sleep|wake|restart|ensure|logs`: the control API as tables."""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestra.config import ConfigError, load_config
from orchestra.control import ControlClient, ControlError, call_sync

STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "sleeping": "cyan",
    "stopping": "yellow",
    "backoff": "magenta",
    "failed": "bold red",
    "cold": "dim",
}
QUERY_TIMEOUT_S = 10.0


def _client(args: argparse.Namespace) -> tuple[ControlClient, float]:
    """The control client (URL and admin token from --url / env / the config) and the timeout
    for actions that wait for a model."""
    token = os.environ.get("ORCHESTRA_ADMIN_TOKEN")
    url, action_timeout = "http://127.0.0.1:8100", 900.0
    try:
        config = load_config(args.config)
        url = config.supervisor_url
        token = token or config.supervisor.admin_token
        action_timeout = config.supervisor.ensure_timeout_s
    except ConfigError:
        pass  # no readable config: defaults (or --url) still work
    return ControlClient(args.url or url, token, timeout_s=QUERY_TIMEOUT_S), action_timeout


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def model_table(models: list[dict[str, Any]]) -> Table:
    table = Table(title="Orchestra models", header_style="bold")
    for column in ("model", "state", "hot", "engine", "pid", "port", "gpus", "uptime"):
        table.add_column(column)
    for column in ("restarts", "page cache", "last used", "last error"):
        table.add_column(column, overflow="fold", max_width=60 if column == "last error" else None)
    for m in models:
        cache = m.get("page_cache") or {}
        cached = f"{cache.get('fraction', 0) * 100:.0f}% of {cache.get('bytes_total', 0) >> 20} MiB"
        for i, e in enumerate(m.get("engines") or [{}]):
            state = e.get("state", m["state"])
            error = (e.get("last_error") or "").splitlines()
            table.add_row(
                m["name"] if i == 0 else "",
                f"[{STATE_STYLE.get(state, '')}]{state}[/]",
                ("yes" if m.get("hot") else "") if i == 0 else "",
                str(e.get("id", "")),
                str(e.get("pid") or "-"),
                str(e.get("port", "")),
                ",".join(str(g) for g in e.get("gpus") or []) or "-",
                _ago(e.get("uptime_s")),
                str(e.get("restarts", 0)),
                cached if i == 0 else "",
                _ago(m.get("last_used_s_ago")) if i == 0 else "",
                error[0] if error else "",
            )
    return table


def main(args: argparse.Namespace) -> int:
    console = Console()
    client, action_timeout = _client(args)
    action = args.action
    try:
        if action == "status":
            console.print(model_table(call_sync(client, lambda c: c.table())))
            return 0
        if action == "logs":
            lines = call_sync(client, lambda c: c.logs(args.model, args.lines))
            for line in lines:
                console.out(line, highlight=False)
            return 0
        with console.status(f"{action} {args.model} ..."):
            reply = call_sync(client, lambda c: c.action(args.model, action, action_timeout))
        console.print(model_table([reply]))
        return 0
    except ControlError as exc:
        why = f"HTTP {exc.status}: {exc.message}" if exc.status else exc.message
        console.print(f"[bold red]{action} failed:[/] {why}", highlight=False)
        return 1
