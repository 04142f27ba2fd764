"""`orchestra ray up --config FILE [--address ADDR]` / `orchestra ray down` / `orchestra ray
status`: supervisors as Ray actors on an existing Ray cluster (docs/multi-node.md).

The config is the supervisor's (models, `engine:`, `supervisor:` with its `admin_token`), plus
an optional `ray:` section (namespace, `node_resource`, timeouts); `--address` and
`--namespace` override it. Ray itself (the token, `RAY_AUTH_MODE=token`) comes from the
environment, as for every Ray client.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from orchestra.config import ConfigError, RayClusterConfig, load_config


def add_ray_parser(sub: Any) -> None:
    cmd = sub.add_parser("ray", help="supervisors as Ray actors: ray up | down | status")
    verbs = cmd.add_subparsers(dest="ray_command", required=True)
    for verb, text in (
        ("up", "one supervisor per eligible Ray node, and one for each node that joins later"),
        ("down", "stop every supervisor (and its engines) and the reconciler"),
        ("status", "the live supervisors, as JSON"),
    ):
        one = verbs.add_parser(verb, help=text)
        one.add_argument("--config", required=True, type=Path)
        one.add_argument("--address", default=None, help="Ray's GCS (default: ray.address)")
        one.add_argument("--namespace", default=None, help="default: ray.namespace")
        one.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    ray_config = (config.ray or RayClusterConfig()).model_copy(
        update={
            k: v
            for k, v in (("address", args.address), ("namespace", args.namespace))
            if v is not None
        }
    )
    from . import reconcile  # imports Ray: only for these commands

    reconcile.connect(ray_config)
    if args.ray_command == "up":
        raw = yaml.safe_load(args.config.read_text()) or {}
        raw = reconcile.absolute_paths(raw, Path.cwd())
        started = reconcile.up(raw, config, ray_config)
        for info in started:
            print(f"supervisor on {info['address']}: {info['url']} (node {info['node_id'][:12]})")
        print(f"{len(started)} started; the reconciler starts one on every node that joins")
    elif args.ray_command == "down":
        stopped = reconcile.down(ray_config, reconcile.stop_timeout_s(config))
        print(f"stopped {len(stopped)} supervisors: {', '.join(stopped) or '-'}")
    else:
        print(json.dumps(reconcile.supervisors(ray_config), indent=2))
    return 0
