"""`orchestra supervisor --config F`: serve the control API; engines die with the supervisor.

uvicorn turns SIGTERM/SIGINT into a graceful shutdown, whose lifespan exit stops every engine
group (SIGTERM, deadline, SIGKILL). If the process is killed outright, the reaper process sees
its pipe close and takes every group down; the next start also kills recorded leftovers.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from orchestra.config import ConfigError, load_config
from orchestra.supervisor.api import create_app


def run(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sup = config.supervisor
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=sup.host,
            port=sup.port,
            log_level="info",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(sup.shutdown_timeout_s),
        )
    )
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[sys.argv.index("--config") + 1] if "--config" in sys.argv else ""))
