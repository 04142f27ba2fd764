"""`orchestra adapters load|unload|list`: LoRA adapters on a running model, through the
supervisor's control API (which calls vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter
on every READY engine of the model). The gateway picks the change up with its model table."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from orchestra.config import ConfigError, load_config
from orchestra.control import ControlClient, ControlError, call_sync

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


def _client(args: argparse.Namespace) -> ControlClient:
    token = os.environ.get("ORCHESTRA_ADMIN_TOKEN")
    url = "http://127.0.0.1:8100"
    try:
        config = load_config(args.config)
        url, token = config.supervisor_url, token or config.supervisor.admin_token
    except ConfigError:
        pass
    return ControlClient(args.url or url, token, timeout_s=CALL_TIMEOUT_S)


def main(args: argparse.Namespace) -> int:
    if args.action != "list" and (not args.adapter or (args.action == "load" and not args.path)):
        print("usage: orchestra adapters load MODEL ADAPTER PATH | unload MODEL ADAPTER")
        return 2
    client = _client(args)
    try:
        if args.action == "list":
            names = call_sync(client, lambda c: c.info(args.model)).adapters
        elif args.action == "load":
            path = os.path.abspath(args.path)
            names = call_sync(
                client, lambda c: c.load_adapter(args.model, args.adapter, path, CALL_TIMEOUT_S)
            )
        else:
            names = call_sync(
                client, lambda c: c.unload_adapter(args.model, args.adapter, CALL_TIMEOUT_S)
            )
    except ControlError as exc:
        if exc.status:
            print(f"error: HTTP {exc.status}: {exc.message}", file=sys.stderr)
        else:
            print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"{args.model}: adapters {', '.join(names) if names else '(none)'}")
    return 0
