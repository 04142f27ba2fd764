"""`orchestra status|top|load|unload|sleep|wake|restart|ensure|logs`: the control API as
tables (rendered by `orchestra.status_view`; `top` and `logs -f` loop in `orchestra.live`)."""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.request

from rich.console import Console

from orchestra.config import ConfigError, load_config
from orchestra.control import ControlClient, ControlError, call_sync
from orchestra.live import Unreachable, follow_logs, run_top
from orchestra.status_view import as_json, compact_table, wide_table

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


def _gateway_url(args: argparse.Namespace) -> str:
    """The gateway's base URL (for `top`'s rates) from --gateway-url / the config / default."""
    if getattr(args, "gateway_url", None):
        return str(args.gateway_url).rstrip("/")
    try:
        gw = load_config(args.config).gateway
    except ConfigError:
        return "http://127.0.0.1:8000"
    host = "127.0.0.1" if gw.host in ("0.0.0.0", "::") else gw.host
    return f"http://{host}:{gw.port}"


def _top(console: Console, client: ControlClient, args: argparse.Namespace) -> int:
    gateway = _gateway_url(args)

    def metrics() -> str:
        try:
            with urllib.request.urlopen(gateway + "/metrics", timeout=QUERY_TIMEOUT_S) as reply:
                return str(reply.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(f"{gateway}: {exc}") from None

    return run_top(
        console, lambda: call_sync(client, lambda c: c.table()), metrics, args.interval, args.count
    )


def _follow(console: Console, client: ControlClient, args: argparse.Namespace) -> int:
    def logs(offset: int | None) -> tuple[list[str], int]:
        return call_sync(client, lambda c: c.follow(args.model, offset, args.lines))

    return follow_logs(console, logs, args.lines)


def main(args: argparse.Namespace) -> int:
    console = Console()
    client, action_timeout = _client(args)
    action = args.action
    try:
        if action == "status":
            models = call_sync(client, lambda c: c.table())
            if args.output == "json":
                console.out(as_json(models), highlight=False)
            elif args.output == "wide":
                console.print(wide_table(models))
            else:
                console.print(compact_table(models, console.width))
            return 0
        if action == "top":
            return _top(console, client, args)
        if action == "logs":
            if args.follow:
                return _follow(console, client, args)
            lines = call_sync(client, lambda c: c.logs(args.model, args.lines))
            for line in lines:
                console.out(line, highlight=False)
            return 0
        with console.status(f"{action} {args.model} ..."):
            reply = call_sync(client, lambda c: c.action(args.model, action, action_timeout))
        console.print(compact_table([reply], console.width))
        return 0
    except ControlError as exc:
        why = f"HTTP {exc.status}: {exc.message}" if exc.status else exc.message
        console.print(f"[bold red]{action} failed:[/] {why}", highlight=False)
        return 1
