"""`orchestra usage` and `orchestra keys`: the gateway's usage ledger and the keys made at run
time, through its admin endpoints (`/admin/usage`, `/admin/keys`; gateway/edge/usage_admin.py).

The admin key is read from `ORCHESTRA_ADMIN_KEY` (none: the gateway must be on loopback, which
is how its admin routes stay open without an admin key)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestra.cli.ctl import _gateway_url

CALL_TIMEOUT_S = 30.0
_BUDGET_FLAGS = {
    "budget_tokens_day": "tokens_per_day",
    "budget_tokens_month": "tokens_per_month",
    "budget_cost_day": "cost_per_day",
    "budget_cost_month": "cost_per_month",
    "max_concurrent": "max_concurrent",
}


def add_parsers(sub: Any) -> None:
    usage = sub.add_parser("usage", help="tokens, requests and cost per key and model")
    usage.add_argument("--key", default=None, help="one key's name")
    usage.add_argument("--model", default=None, help="one model")
    usage.add_argument("--since", default="7d", help="7d, 24h, 30m or a date (default 7d)")
    usage.add_argument("--hourly", action="store_true", help="one line per hour, not totals")
    usage.add_argument("-o", "--output", choices=["table", "json"], default="table")
    _common(usage)
    usage.set_defaults(func=usage_main)

    keys = sub.add_parser("keys", help="API keys made at run time: create, list, disable, ...")
    keys.add_argument("action", choices=["create", "list", "disable", "enable", "delete"])
    keys.add_argument("name", nargs="?", help="the key's name (all but list)")
    keys.add_argument("--name", dest="name_option", default=None, help="the same, as an option")
    keys.add_argument("--budget-tokens-day", type=int, default=None)
    keys.add_argument("--budget-tokens-month", type=int, default=None)
    keys.add_argument("--budget-cost-day", type=float, default=None)
    keys.add_argument("--budget-cost-month", type=float, default=None)
    keys.add_argument("--max-concurrent", type=int, default=None)
    keys.add_argument("--team", default=None, help="a team of gateway.teams (its budget too)")
    keys.add_argument("-o", "--output", choices=["table", "json"], default="table")
    _common(keys)
    keys.set_defaults(func=keys_main)


def _common(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--gateway-url", default=None, help="gateway (default from config)")
    cmd.add_argument("--config", default="configs/vllm_config.yaml")


class GatewayError(Exception):
    pass


def call(args: argparse.Namespace, method: str, path: str, body: object = None) -> Any:
    """One admin call to the gateway; its JSON answer, or GatewayError with its message."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(_gateway_url(args) + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    admin_key = os.environ.get("ORCHESTRA_ADMIN_KEY")
    if admin_key:
        request.add_header("authorization", f"Bearer {admin_key}")
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise GatewayError(f"HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise GatewayError(f"gateway unreachable: {exc}") from None


def usage_main(args: argparse.Namespace) -> int:
    query = {
        k: v for k, v in (("since", args.since), ("key", args.key), ("model", args.model)) if v
    }
    try:
        report = call(args, "GET", "/admin/usage?" + urllib.parse.urlencode(query))
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(report, indent=2))
        return 0
    rows = report["rows"] if args.hourly else report["totals"]
    table = Table(title=f"usage since {_when(report['since'])}")
    columns = ["key", "model", "requests", "errors", "prompt_tokens", "completion_tokens"]
    columns += ["cached_tokens", "cost"]
    if args.hourly:
        columns.insert(0, "hour")
    for name in columns:
        table.add_column(name, justify="left" if name in ("hour", "key", "model") else "right")
    for row in rows:
        cells = {**row, "hour": _when(row["hour"]) if "hour" in row else ""}
        table.add_row(*(_cell(cells[c]) for c in columns))
    Console().print(table)
    return 0


def keys_main(args: argparse.Namespace) -> int:
    args.name = args.name or args.name_option
    if args.action != "list" and not args.name:
        print(f"usage: orchestra keys {args.action} NAME", file=sys.stderr)
        return 2
    try:
        if args.action == "list":
            keys = call(args, "GET", "/admin/keys")["data"]
            if args.output == "json":
                print(json.dumps(keys, indent=2))
            else:
                _print_keys(keys)
            return 0
        if args.action == "create":
            budget = {
                field: getattr(args, flag)
                for flag, field in _BUDGET_FLAGS.items()
                if getattr(args, flag) is not None
            }
            new = {"name": args.name, "budget": budget or None, "team": args.team}
            made = call(args, "POST", "/admin/keys", new)
            if args.output == "json":
                print(json.dumps(made))
            else:
                print(f"key {made['name']} created; its secret (shown only now):")
                print(made["key"])
            return 0
        name = urllib.parse.quote(args.name, safe="")
        if args.action == "delete":
            call(args, "DELETE", f"/admin/keys/{name}")
        else:
            call(args, "POST", f"/admin/keys/{name}/{args.action}")
        print(f"key {args.name}: {args.action}d")
        return 0
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _print_keys(keys: list[dict[str, Any]]) -> None:
    table = Table()
    for name in ("name", "source", "team", "state", "created", "budget"):
        table.add_column(name)
    for key in keys:
        budget = ", ".join(f"{k}={v}" for k, v in (key["budget"] or {}).items())
        created = _when(key["created"]) if key["created"] else ""
        state = "disabled" if key["disabled"] else "enabled"
        team = key.get("team") or "-"
        table.add_row(key["name"], key["source"], team, state, created, budget or "-")
    Console().print(table)


def _when(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch)) + "Z"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
