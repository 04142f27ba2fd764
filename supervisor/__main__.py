"""`orchestra supervisor --config F`: serve the control API.

uvicorn turns SIGTERM/SIGINT into a graceful shutdown, whose lifespan exit stops every engine
group (SIGTERM, deadline, SIGKILL): `orchestra up`'s Ctrl-C leaves nothing behind. As the
shutdown begins, commands still waiting (an ensure on a loading model, a drain) answer 503 at
once (`api.begin_close`), so it takes about `engine.stop_timeout_s`, not that plus
`supervisor.shutdown_timeout_s` (which still bounds the quick requests in flight). SIGUSR1 is a
graceful exit that leaves the engines serving, for the next supervisor to adopt (an upgrade).
Killed outright (SIGKILL, a crash): with `on_supervisor_exit: kill` the reaper process sees its
pipe close and takes every group down; with `adopt` (the default) the engines keep serving and
the next start adopts those that match its config and kills the rest.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn

from orchestra.config import ConfigError, load_config

from .api import begin_close, create_app


class _Server(uvicorn.Server):
    """uvicorn's server, which says when its graceful shutdown begins (before it waits for the
    requests in flight)."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


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
    app = create_app(config)
    server = _Server(
        uvicorn.Config(
            app,
            host=sup.host,
            port=sup.port,
            log_level="info",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(sup.shutdown_timeout_s),
        ),
        lambda: begin_close(app),
    )

    def keep_engines(signum: int, frame: FrameType | None) -> None:
        app.state.keep_engines = True
        server.should_exit = True

    signal.signal(signal.SIGUSR1, keep_engines)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[sys.argv.index("--config") + 1] if "--config" in sys.argv else ""))
