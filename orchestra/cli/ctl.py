"""`orchestra status|top|load|unload|sleep|wake|restart|ensure|logs`: the control API as
tables (rendered by `orchestra.cli.status_view`; `top` and `logs -f` loop in `orchestra.cli.live`).

A client of the control API like any other, so it lives in `orchestra/`, not the supervisor."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable

import aiohttp
from rich.console import Console

from orchestra.cli.live import Unreachable, follow_logs, run_top, run_until_interrupted
from orchestra.cli.status_view import as_json, compact_table, print_wide
from orchestra.config import ConfigError, RayClusterConfig, load_config
from orchestra.control import ControlClient, ControlError, call_sync

QUERY_TIMEOUT_S = 10.0
FOLLOW_INTERVAL_S = 0.5  # `logs -f`: how often it asks for new lines


def _clients(args: argparse.Namespace) -> tuple[dict[str, ControlClient], float]:
    """The control clients by node name (URL and admin token from --url / env / the config; with
    `supervisors:` in the config, every node, with `ray:` every live supervisor Ray knows, or
    the one `--node` names) and the timeout for actions that wait for a model."""
    token = os.environ.get("ORCHESTRA_ADMIN_TOKEN")
    url, action_timeout = "http://127.0.0.1:8100", 900.0
    endpoints: dict[str, tuple[str, str | None]] = {}
    try:
        config = load_config(args.config)
        url = config.supervisor_url
        token = token or config.supervisor.admin_token
        action_timeout = config.supervisor.ensure_timeout_s
        endpoints = {e.name: (e.url, e.admin_token) for e in config.supervisors}
        if config.ray is not None:  # the gateway's `ray:`: the live supervisors, from Ray
            endpoints = _ray_endpoints(config.ray, token)
    except ConfigError:
        pass  # no readable config: defaults (or --url) still work
    node = getattr(args, "node", None)
    if args.url or not endpoints:
        only = ControlClient(args.url or url, token, timeout_s=QUERY_TIMEOUT_S)
        return {node or "local": only}, action_timeout
    if node is not None:
        if node not in endpoints:
            raise ControlError(0, f"no node {node!r} in supervisors: {', '.join(endpoints)}")
        endpoints = {node: endpoints[node]}
    clients = {
        name: ControlClient(u, node_token or token, timeout_s=QUERY_TIMEOUT_S)
        for name, (u, node_token) in endpoints.items()
    }
    return clients, action_timeout


def _ray_endpoints(ray: RayClusterConfig, token: str | None) -> dict[str, tuple[str, str | None]]:
    """Node name (as the gateway names it) -> (control URL, token) of each live supervisor."""
    from orchestra.cluster import reconcile  # imports Ray: only with `ray:`

    reconcile.connect(ray)
    found = reconcile.supervisors(ray)
    return {f"ray-{i['address']}": (str(i["url"]), ray.admin_token or token) for i in found}


def _status(console: Console, clients: dict[str, ControlClient], output: str) -> None:
    """One table per node (a `models on NODE` line before each when there are several)."""
    tables = {name: call_sync(c, lambda c: c.table()) for name, c in clients.items()}
    if output == "json" and len(tables) > 1:
        merged = {name: json.loads(as_json(models)) for name, models in tables.items()}
        console.out(json.dumps(merged, indent=2), highlight=False)
        return
    for name, models in tables.items():
        if len(tables) > 1:
            console.print(f"[bold]models on {name}[/]")
        if output == "json":
            console.out(as_json(models), highlight=False)
        elif output == "wide":
            print_wide(console, models)
        else:
            console.print(compact_table(models, console.width))


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
    timeout = aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S)

    async def top(interrupted: Callable[[], bool]) -> int:
        async with client, aiohttp.ClientSession(timeout=timeout) as session:

            async def metrics() -> str:
                try:
                    async with session.get(gateway + "/metrics") as reply:
                        return await reply.text()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise Unreachable(f"{gateway}: {exc!r}") from None

            return await run_top(
                console, client.table, metrics, args.interval, args.count, interrupted
            )

    return run_until_interrupted(top)


def _follow(console: Console, client: ControlClient, args: argparse.Namespace) -> int:
    async def follow(interrupted: Callable[[], bool]) -> int:
        async with client:

            def logs(offset: int | None) -> Awaitable[tuple[list[str], int]]:
                return client.follow(args.model, offset, args.lines)

            return await follow_logs(console, logs, args.lines, FOLLOW_INTERVAL_S, interrupted)

    return run_until_interrupted(follow)


def main(args: argparse.Namespace) -> int:
    console = Console()
    action = args.action
    try:
        clients, action_timeout = _clients(args)
        if action == "status":
            _status(console, clients, args.output)
            return 0
        if len(clients) > 1:
            raise ControlError(
                0, f"several supervisors: pick one with --node ({', '.join(clients)})"
            )
        ((_, client),) = clients.items()
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
