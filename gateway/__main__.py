"""`python -m orchestra.gateway --config FILE` (also `orchestra gateway --config FILE`)."""

from __future__ import annotations

import argparse
import logging
import math
import sys

import uvicorn

from orchestra.config import ConfigError, load_config
from orchestra.gateway.app import create_app


def run(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"orchestra gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(config),
        host=config.gateway.host,
        port=config.gateway.port,
        loop="uvloop",
        http="httptools",
        access_log=False,  # per-request logging is the hot path's biggest avoidable cost
        timeout_graceful_shutdown=math.ceil(config.gateway.drain_timeout_s),  # 0 = none
        log_level="info",
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestra.gateway")
    parser.add_argument("--config", default="configs/vllm_config.yaml")
    return run(parser.parse_args().config)


if __name__ == "__main__":
    sys.exit(main())
