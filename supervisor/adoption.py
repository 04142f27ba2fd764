"""A supervisor restart drops nothing: adopt the engines an earlier run left serving.

Each spawned engine is recorded in `state_dir/engines/<pgid>.json` (engine id, pid = pgid, port,
GPUs, a hash of its argv and environment, and its run's token). With
`supervisor.on_supervisor_exit: adopt`, a starting supervisor adopts every recorded engine whose
group still carries that token (the pid was not reused), whose id and config hash match the
engine this config would launch (and its port, when the config names one), whose recorded port
is listened on by that group and by nobody else (`ports.owner`: a port now held by a process
outside the group is someone else's server), and whose `/health` answers; the others are killed
(`ProcessGroups.kill_leftovers`). Adopted engines are READY at once; the supervisor watches their
exit through a pidfd, since they are not its children.

The engines' `--api-key` (engines off loopback) must survive a restart too: unless configured, it
is generated once and kept in `state_dir/engine_api_key` (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from typing import Any

from orchestra.config import OrchestraConfig
from orchestra.config.nodes import is_loopback

from .engine import Engine
from .ports import owner
from .probe import EngineProbe
from .procgroup import ProcessGroups

log = logging.getLogger(__name__)


def engine_api_key(config: OrchestraConfig) -> str | None:
    """The key engines start with: the configured one, else (engines off loopback) one kept in
    the state dir; None on loopback (nothing but this host reaches them)."""
    if config.engine.api_key:
        return config.engine.api_key
    if is_loopback(config.engine.host):
        return None
    path = config.supervisor.state_dir / "engine_api_key"
    with contextlib.suppress(OSError):
        key = path.read_text().strip()
        if key:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


class AdoptedProcess:
    """An engine leader this supervisor did not spawn: exit seen through a pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._returncode is None and not _alive(self.pid):
            self._returncode = -1  # not our child: its exit status is not ours to read
        return self._returncode

    async def wait(self) -> int:
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._returncode = -1
            return -1
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            if _alive(self.pid):
                await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        self._returncode = -1
        return -1


def _alive(pid: int) -> bool:
    """Running (a zombie no longer serves: it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def load_records(groups: ProcessGroups) -> list[dict[str, Any]]:
    out = []
    if groups.records_dir.is_dir():
        for path in sorted(groups.records_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(path.read_text()))
    return out


async def adopt_engines(
    engines: dict[str, Engine], groups: ProcessGroups, probe: EngineProbe
) -> list[str]:
    """Adopt every recorded engine that matches and answers; returns their ids."""
    adopted: list[str] = []
    for record in load_records(groups):
        engine = engines.get(str(record.get("engine")))
        why = _mismatch(engine, record, groups)
        if why is None and engine is not None:
            why = await _not_serving(engine, record, probe)
        if why is not None or engine is None:
            log.warning("not adopting engine record %s: %s", record.get("engine"), why)
            continue
        pgid, port = int(record["pgid"]), int(record["port"])
        groups.adopt(pgid, str(record["token"]), {**record, "gpus": record.get("gpus", [])})
        await engine.adopt(AdoptedProcess(pgid), [int(g) for g in record.get("gpus", [])], port)
        adopted.append(engine.id)
        log.info("adopted engine %s (pid %d, %s)", engine.id, pgid, engine.url)
    return adopted


def _mismatch(engine: Engine | None, record: dict[str, Any], groups: ProcessGroups) -> str | None:
    if engine is None:
        return "no such engine in this config"
    try:
        pgid, token = int(record["pgid"]), str(record["token"])
    except (KeyError, ValueError):
        return "malformed record"
    if not _alive(pgid) or not groups.carries_token(pgid, token):
        return "its process is gone"
    port = record.get("port")
    if not isinstance(port, int):
        return "malformed record"
    if engine.spec.port_key is not None and port != engine.spec.port:
        return f"port {port} != {engine.spec.port} ({engine.spec.port_key})"
    if record.get("config_hash") != engine.spec.config_hash:
        return "its config changed"
    return None


async def _not_serving(engine: Engine, record: dict[str, Any], probe: EngineProbe) -> str | None:
    """Why the recorded engine is not the one serving its port (None: it is)."""
    port = int(record["port"])
    held = await asyncio.to_thread(owner, int(record["pgid"]), engine.spec.host, port)
    if not held.ours:
        return held.describe(port)
    if not await probe.healthy(engine.spec.url_at(port), engine.spec.health_path):
        return "its /health does not answer"
    return None
