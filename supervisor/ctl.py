"""`orchestra status|load|unload|sleep|wake|restart|ensure|logs`: the control API as tables."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestra.config import ConfigError, load_config

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


class CtlError(Exception):
    pass


def _target(args: argparse.Namespace) -> tuple[str, str | None, float]:
    """(control API URL, admin token, action timeout) from --url / the config / defaults."""
    token = os.environ.get("ORCHESTRA_ADMIN_TOKEN")
    url, action_timeout = "http://127.0.0.1:8100", 900.0
    try:
        config = load_config(args.config)
        url = config.supervisor_url
        token = token or config.supervisor.admin_token
        action_timeout = config.supervisor.ensure_timeout_s
    except ConfigError:
        pass  # no readable config: defaults (or --url) still work
    return (args.url or url).rstrip("/"), token, action_timeout + 10


def _call(method: str, url: str, token: str | None, timeout_s: float) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise CtlError(f"HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CtlError(f"cannot reach the supervisor at {url}: {exc}") from None


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
    url, token, action_timeout = _target(args)
    action = args.action
    try:
        if action == "status":
            reply = _call("GET", url + "/models", token, QUERY_TIMEOUT_S)
            console.print(model_table(reply["models"]))
            return 0
        name = urllib.parse.quote(args.model, safe="/")
        if action == "logs":
            query = urllib.parse.urlencode({"lines": args.lines})
            reply = _call("GET", f"{url}/models/{name}/logs?{query}", token, QUERY_TIMEOUT_S)
            for line in reply["lines"]:
                console.out(line, highlight=False)
            return 0
        with console.status(f"{action} {args.model} ..."):
            reply = _call("POST", f"{url}/models/{name}/{action}", token, action_timeout)
        console.print(model_table([reply]))
        return 0
    except CtlError as exc:
        console.print(f"[bold red]{action} failed:[/] {exc}", highlight=False)
        return 1
