"""`orchestra adapters load|unload|list`: LoRA adapters on a running model, through the
supervisor's control API (which calls vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter
on every READY engine of the model). The gateway picks the change up with its model table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from orchestra.config import ConfigError, load_config

CALL_TIMEOUT_S = 180.0  # a load reads the adapter's weights on every engine


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("adapters", help="LoRA adapters: load, unload, list")
    cmd.add_argument("action", choices=["load", "unload", "list"])
    cmd.add_argument("model", help="the base model (a managed server)")
    cmd.add_argument("adapter", nargs="?", help="adapter name (the `model` clients send)")
    cmd.add_argument("path", nargs="?", help="load: folder with adapter_config.json")
    cmd.add_argument("--url", default=None, help="control API (default from config)")
    cmd.add_argument("--config", default="configs/vllm_config.yaml")
    cmd.set_defaults(func=main)


def _target(args: argparse.Namespace) -> tuple[str, str | None]:
    token = os.environ.get("ORCHESTRA_ADMIN_TOKEN")
    url = "http://127.0.0.1:8100"
    try:
        config = load_config(args.config)
        url, token = config.supervisor_url, token or config.supervisor.admin_token
    except ConfigError:
        pass
    return (args.url or url).rstrip("/"), token


def _call(method: str, url: str, token: str | None, body: dict[str, Any] | None) -> Any:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as reply:
        return json.loads(reply.read() or b"null")


def main(args: argparse.Namespace) -> int:
    base, token = _target(args)
    model = urllib.parse.quote(args.model, safe="")
    try:
        if args.action == "list":
            reply = _call("GET", f"{base}/models/{model}", token, None)
        elif not args.adapter or (args.action == "load" and not args.path):
            print("usage: orchestra adapters load MODEL ADAPTER PATH | unload MODEL ADAPTER")
            return 2
        elif args.action == "load":
            path = os.path.abspath(args.path)
            body = {"name": args.adapter, "path": path}
            reply = _call("POST", f"{base}/models/{model}/adapters", token, body)
        else:
            adapter = urllib.parse.quote(args.adapter, safe="")
            reply = _call("DELETE", f"{base}/models/{model}/adapters/{adapter}", token, None)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        print(f"error: HTTP {exc.code}: {message}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: cannot reach the supervisor at {base}: {exc}", file=sys.stderr)
        return 1
    names = reply.get("adapters", []) if isinstance(reply, dict) else []
    print(f"{args.model}: adapters {', '.join(names) if names else '(none)'}")
    return 0
