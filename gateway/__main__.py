"""`python -m orchestra.gateway --config FILE` (also `orchestra gateway --config FILE`).

With `gateway.workers` > 1 this process starts the workers (`gateway/workers.py`) and each of
them runs `--worker i/N`: the app on a SO_REUSEPORT socket of the shared port.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys

import uvicorn

from orchestra.config import ConfigError, OrchestraConfig, load_config

from .app import create_app
from .workers import (
    Workers,
    divide,
    exit_with_parent,
    reuseport_socket,
    worker_count,
)


def _serve(config: OrchestraConfig, worker: tuple[int, int] | None) -> None:
    gw = config.gateway
    settings = uvicorn.Config(
        create_app(config if worker is None else divide(config, *worker)),
        host=gw.host,
        port=gw.port,
        loop="uvloop",
        http="httptools",
        interface="asgi3",  # the edge is an ASGI 3 app (a class instance: say so, no guessing)
        access_log=False,  # per-request logging is the hot path's biggest avoidable cost
        timeout_graceful_shutdown=math.ceil(gw.drain_timeout_s),  # 0 = none
        log_level="info",
    )
    server = uvicorn.Server(settings)
    if worker is not None:
        exit_with_parent()
    server.run(sockets=None if worker is None else [reuseport_socket(gw.host, gw.port)])


def run(config_path: str, worker: tuple[int, int] | None = None) -> int:
    try:
        config = load_config(config_path)
        count = worker_count(config)
    except ConfigError as exc:
        print(f"orchestra gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if worker is None and count > 1:
        return Workers(config_path, count, config.gateway.drain_timeout_s).run()
    _serve(config, worker)
    return 0


def _worker(value: str) -> tuple[int, int]:
    index, _, count = value.partition("/")
    return int(index), int(count)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestra.gateway")
    parser.add_argument("--config", default="configs/vllm_config.yaml")
    parser.add_argument("--worker", type=_worker, help=argparse.SUPPRESS)  # i/N, set by workers
    args = parser.parse_args()
    return run(args.config, args.worker)


if __name__ == "__main__":
    sys.exit(main())
