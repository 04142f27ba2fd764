"""Network namespaces as hosts, for multi-node tests and figures (root; iproute2 from Debian).

`Cluster` makes N "nodes": each a namespace `NAME` joined to the root namespace by a veth pair,
the root end 10.231.K.1/24 and the node end 10.231.K.2/24. Concurrent runs (parallel test
workers, other checkouts) do not collide: names carry this process's pid, and K is the first
block no interface holds yet from a pid-derived start, picked under a file lock. Only those
addresses are used: no traffic leaves the machine. `Cluster.close()` deletes every namespace
and veth it made, even half-built ones. `Node.popen(argv)` runs a process inside a node (`ip
netns exec`, which execs: the pid is the program's own). `cut()` / `restore()` set the node's
end of its link down / up: the node falls silent (no FIN, no RST, as a machine that lost power
or its network), while the root end keeps its address (a Ray head listens on it,
`integration/multinode/ray_nodes.py`) and its route to the node (so nothing sent to the node
leaves by the default route).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from orchestra.lifetime import spawn

SUBNET = "10.231"
LOCK_FILE = Path(tempfile.gettempdir()) / "orchestra-tests-netns.lock"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


def ensure_iproute2() -> str | None:
    """None when `ip netns` works here (installing iproute2 with apt-get if missing), else why
    not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        if shutil.which("apt-get") is None:
            return "iproute2 is not installed and apt-get is not available"
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "iproute2"],
            capture_output=True,
            timeout=300,
            check=False,
        )
        if shutil.which("ip") is None:
            return "apt-get install iproute2 failed"
    probe = f"orcprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"namespaces are refused here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Node:
    name: str  # namespace
    host_if: str  # the veth end in the root namespace
    address: str  # the node's address (reachable from the root namespace)
    node_if: str  # the veth end inside the namespace
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(self, argv: list[str], log: IO[bytes], cwd: Path) -> subprocess.Popen[bytes]:
        proc = spawn(["ip", "netns", "exec", self.name, *argv], cwd=cwd, stdout=log)
        self.procs.append(proc)
        return proc

    def cut(self) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.node_if, "down")

    def restore(self) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.node_if, "up")


def _subnets_in_use() -> set[int]:
    """K of every 10.231.K.x address an interface holds in the root namespace."""
    out = _ip("-4", "-o", "addr", "show", check=False).stdout
    return {int(k) for k in re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.", out)}


def _free_base(count: int) -> int:
    """A base with 10.231.<base+1..base+count> all unused, searched from a pid-derived start."""
    used = _subnets_in_use()
    start = (os.getpid() % 100) * 2
    for step in range(0, 250, 2):
        base = (start + step) % 250
        if not used & set(range(base + 1, base + count + 1)):
            return base
    raise RuntimeError(f"no free {SUBNET}.K/24 block for {count} nodes")


class Cluster:
    def __init__(self, count: int) -> None:
        tag = os.getpid() % 100000
        self.nodes: list[Node] = []
        # Held until the addresses are up, so another run's search sees them taken.
        with LOCK_FILE.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._build(tag, _free_base(count), count)

    def _build(self, tag: int, base: int, count: int) -> None:
        try:
            for i in range(1, count + 1):
                ns, host_if, peer = f"orc{tag}n{i}", f"orc{tag}h{i}", f"orc{tag}p{i}"
                net = f"{SUBNET}.{base + i}"
                node = Node(ns, host_if, f"{net}.2", peer)
                self.nodes.append(node)
                _ip("netns", "add", ns)
                _ip("link", "add", host_if, "type", "veth", "peer", "name", peer)
                _ip("link", "set", peer, "netns", ns)
                _ip("addr", "add", f"{net}.1/24", "dev", host_if)
                _ip("link", "set", host_if, "up")
                _ip("netns", "exec", ns, "ip", "addr", "add", f"{net}.2/24", "dev", peer)
                _ip("netns", "exec", ns, "ip", "link", "set", peer, "up")
                _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill what runs in the nodes, delete the veths and namespaces (idempotent)."""
        for node in self.nodes:
            for proc in node.procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, 9)
                    proc.wait()
            # Anything else still inside (engines an adopting test left): kill by namespace.
            pids = _ip("netns", "pids", node.name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _ip("link", "del", node.host_if, check=False)  # deletes its peer too
            _ip("netns", "del", node.name, check=False)
