"""Engine ports: a free one picked right before each launch, and the proof that whoever listens
on an engine's port is the engine we started.

Ports named in the config (`port:`) are used as given: one already taken is a failed start that
names the port and its YAML path. Every other engine gets, at each launch, the port it had
before if that is still free, else the first free port from `engine.first_port` upward that no
other engine of this supervisor claims (configured, current, or a KV-event socket). "Free" is a
bind test on the engine's host right before the launch: another stack, or a server started by
hand, may hold any port of the range.

A bind test can race (two supervisors launching at once), so READY also needs proof
(`PortPicker.owner`): some process of the engine's group listens on the port, and no process
outside it does (a server with SO_REUSEPORT can share a port, and the kernel would split
connections between them). A foreign server answering `/health` is never taken for our engine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from .errors import EngineError

_WILDCARDS = ("", "0.0.0.0", "::")
_LAST_PORT = 65535


def bindable(host: str, port: int) -> bool:
    """Whether a server could listen on `host:port` now. SO_REUSEADDR as servers set it, so a
    port left in TIME_WAIT by a stopped engine counts as free; a LISTEN socket does not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError:
            return False
    return True


def _overlaps(host: str, ip: str) -> bool:
    """Whether a socket bound to `ip` takes connections meant for an engine bound to `host`."""
    if host in _WILDCARDS or ip in _WILDCARDS:
        return True
    try:
        a, b = ipaddress.ip_address(host), ipaddress.ip_address(ip)
    except ValueError:
        return True  # a host name: assume it may be any address
    mapped = getattr(b, "ipv4_mapped", None)
    return a == b or (mapped is not None and a == mapped)


def listeners(host: str, port: int) -> list[int | None]:
    """Pids of the TCP sockets listening on `port` at an address overlapping `host` (None: a
    socket whose process this user cannot see, which is then not ours)."""
    return [
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
        and c.laddr
        and c.laddr.port == port
        and _overlaps(host, c.laddr.ip)
    ]


def _in_group(pid: int | None, pgid: int, tree: set[int]) -> bool:
    if pid is None:
        return False
    if pid in tree:
        return True
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False


def _tree(leader: int) -> set[int]:
    """The leader and its descendants (a worker that left the group is still the engine's)."""
    try:
        root = psutil.Process(leader)
        return {leader, *(p.pid for p in root.children(recursive=True))}
    except psutil.Error:
        return {leader}


@dataclass(frozen=True)
class Owner:
    """Who listens on an engine's port: `ours` when the engine's group does and nobody else."""

    mine: bool  # some listener is the engine's
    foreign: tuple[int | None, ...]  # listeners outside its group

    @property
    def ours(self) -> bool:
        return self.mine and not self.foreign

    def describe(self, port: int) -> str:
        if not self.foreign:
            return f"nothing of this engine listens on port {port}"
        who = ", ".join("another user's process" if p is None else f"pid {p}" for p in self.foreign)
        return f"port {port} is held by {who}, not by this engine"


def owner(pgid: int, host: str, port: int) -> Owner:
    """Blocking (psutil reads /proc): call it in a thread from the event loop."""
    tree = _tree(pgid)
    found = listeners(host, port)
    mine = [p for p in found if _in_group(p, pgid, tree)]
    return Owner(bool(mine), tuple(p for p in found if not _in_group(p, pgid, tree)))


class PortPicker:
    """One per supervisor: which port each engine listens on, chosen at each launch."""

    def __init__(self, first_port: int, claims: dict[str, int], reserved: Iterable[int]) -> None:
        self._first = first_port
        self._claims = dict(claims)  # engine id -> its port (configured or last picked)
        self._reserved = set(reserved)  # never given out: KV-event sockets

    def pick(self, engine_id: str, host: str, configured: str | None) -> int:
        """The port to launch `engine_id` on. `configured`: the YAML path of its `port:`, whose
        port must be free (EngineError otherwise); None: any free port, its last one first."""
        current = self._claims[engine_id]
        if configured is not None:
            if not bindable(host, current):
                raise EngineError(
                    f"{engine_id}: port {current} ({configured}) is already in use"
                    f"{_holder(host, current)}; free it or choose another port"
                )
            return current
        others = {p for e, p in self._claims.items() if e != engine_id} | self._reserved
        for port in itertools.chain((current,), range(self._first, _LAST_PORT + 1)):
            if port not in others and bindable(host, port):
                self._claims[engine_id] = port
                return port
        raise EngineError(f"{engine_id}: no free port from engine.first_port {self._first} up")

    def adopted(self, engine_id: str, port: int) -> None:
        """An adopted engine keeps the port it listens on."""
        self._claims[engine_id] = port


def _holder(host: str, port: int) -> str:
    with contextlib.suppress(psutil.Error, OSError):
        pids = [p for p in listeners(host, port) if p is not None]
        if pids:
            return " by pid " + ", ".join(str(p) for p in pids)
    return ""
