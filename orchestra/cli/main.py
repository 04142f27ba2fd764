"""`orchestra` console script: one entry point, each subcommand owned by its package."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _gateway(args: argparse.Namespace) -> int:
    from orchestra.gateway.__main__ import run

    return run(args.config)


def _supervisor(args: argparse.Namespace) -> int:
    from orchestra.supervisor.__main__ import run

    return run(args.config)


def _ctl(args: argparse.Namespace) -> int:
    from orchestra.cli.ctl import main as ctl_main

    return ctl_main(args)


def _up(args: argparse.Namespace) -> int:
    from orchestra.up import main as up_main

    return up_main(args)


def _models(args: argparse.Namespace) -> int:
    from orchestra.models import main as models_main

    return models_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, func, help_text in (
        ("gateway", _gateway, "run the OpenAI-compatible gateway"),
        ("supervisor", _supervisor, "run the engine supervisor (control plane)"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", default="configs/vllm_config.yaml")
        cmd.set_defaults(func=func)

    up = sub.add_parser("up", help="start supervisor then gateway; Ctrl-C stops both")
    up.add_argument("--config", default=None, help="default: vllm_config.yaml, or cpu.yaml on CPU")
    up.add_argument("--hot-only", action="store_true", help="start the hot set and stop there")
    up.set_defaults(func=_up)

    models = sub.add_parser("models", help="prepare local model folders (no hub downloads)")
    models.add_argument("action", choices=["prepare"])
    models.add_argument("name")
    models.add_argument("--out", default=None)
    models.set_defaults(func=_models)

    from orchestra.batch.cli import add_batch_parser
    from orchestra.cli.adapters import add_parser as add_adapters
    from orchestra.cli.audit import add_parser as add_audit
    from orchestra.cli.usage import add_parsers as add_usage
    from orchestra.cluster.cli import add_ray_parser

    add_adapters(sub)
    add_audit(sub)
    add_batch_parser(sub)
    add_ray_parser(sub)
    add_usage(sub)

    names = ("status", "top", "load", "unload", "sleep", "wake", "restart", "ensure", "logs")
    for name in names:
        cmd = sub.add_parser(name, help=f"control API: {name}")
        if name not in ("status", "top"):
            cmd.add_argument("model")
        if name == "status":
            choices = ["compact", "wide", "json"]
            cmd.add_argument("-o", "--output", choices=choices, default="compact")
        if name == "top":
            cmd.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
            cmd.add_argument("--count", type=int, default=0, help="stop after N redraws (0: never)")
            cmd.add_argument("--gateway-url", default=None, help="gateway (default from config)")
        if name == "logs":
            cmd.add_argument("-n", "--lines", type=int, default=50)
            cmd.add_argument("-f", "--follow", action="store_true", help="print new lines too")
        cmd.add_argument("--url", default=None, help="control API (default from config)")
        cmd.add_argument(
            "--node", default=None, help="one of the config's `supervisors:` (default: all/only)"
        )
        cmd.add_argument("--config", default="configs/vllm_config.yaml")
        cmd.set_defaults(func=_ctl, action=name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
