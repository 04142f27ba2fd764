"""`orchestra status|top|load|unload|sleep|wake|restart|ensure|logs`: the control API as
tables (rendered by `orchestra.status_view`; `top` and `logs -f` loop in `orchestra.live`)."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console

from orchestra.config import ConfigError, load_config
from orchestra.live import Unreachable, follow_logs, run_top
from orchestra.status_view import as_json, compact_table, wide_table

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


def gateway_url(args: argparse.Namespace) -> str:
    """The gateway's base URL (for `top`'s rates) from --gateway-url / the config / default."""
    if getattr(args, "gateway_url", None):
        return str(args.gateway_url).rstrip("/")
    try:
        gw = load_config(args.config).gateway
    except ConfigError:
        return "http://127.0.0.1:8000"
    host = "127.0.0.1" if gw.host in ("0.0.0.0", "::") else gw.host
    return f"http://{host}:{gw.port}"


def call(method: str, url: str, token: str | None, timeout_s: float) -> Any:
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


def _top(
    console: Console, url: str, token: str | None, gateway: str, args: argparse.Namespace
) -> int:
    def models() -> list[dict[str, Any]]:
        return list(call("GET", url + "/models", token, QUERY_TIMEOUT_S)["models"])

    def metrics() -> str:
        try:
            with urllib.request.urlopen(gateway + "/metrics", timeout=QUERY_TIMEOUT_S) as reply:
                return str(reply.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(f"{gateway}: {exc}") from None

    return run_top(console, models, metrics, args.interval, args.count)


def _follow(console: Console, url: str, token: str | None, lines: int) -> int:
    def logs(offset: int | None) -> dict[str, Any]:
        query = {"lines": str(lines)} if offset is None else {"since": str(offset)}
        return dict(call("GET", f"{url}?{urllib.parse.urlencode(query)}", token, QUERY_TIMEOUT_S))

    return follow_logs(console, logs, lines)


def main(args: argparse.Namespace) -> int:
    console = Console()
    url, token, action_timeout = _target(args)
    action = args.action
    try:
        if action == "status":
            models = call("GET", url + "/models", token, QUERY_TIMEOUT_S)["models"]
            if args.output == "json":
                console.out(as_json(models), highlight=False)
            elif args.output == "wide":
                console.print(wide_table(models))
            else:
                console.print(compact_table(models, console.width))
            return 0
        if action == "top":
            return _top(console, url, token, gateway_url(args), args)
        name = urllib.parse.quote(args.model, safe="/")
        if action == "logs":
            if args.follow:
                return _follow(console, f"{url}/models/{name}/logs", token, args.lines)
            query = urllib.parse.urlencode({"lines": args.lines})
            reply = call("GET", f"{url}/models/{name}/logs?{query}", token, QUERY_TIMEOUT_S)
            for line in reply["lines"]:
                console.out(line, highlight=False)
            return 0
        with console.status(f"{action} {args.model} ..."):
            reply = call("POST", f"{url}/models/{name}/{action}", token, action_timeout)
        console.print(compact_table([reply], console.width))
        return 0
    except CtlError as exc:
        console.print(f"[bold red]{action} failed:[/] {exc}", highlight=False)
        return 1
