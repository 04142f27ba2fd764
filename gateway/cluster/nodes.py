"""The nodes behind one gateway: each supervisor's last model table, its load, and whether it
answers — and the order in which nodes are asked to place a cold model.

A node is *reachable* while its supervisor answers syncs. One that has not answered for
`gateway.node_down_after_s` is *away*: its engines are probed directly, and only those whose
`/health` still answers stay in rotation (a supervisor restarting leaves its engines serving; a
cut link or a dead machine takes them all out). Its next answer brings it back whole.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from orchestra.control import ControlClient, ModelStatus, NodeLoad


@dataclass(eq=False)
class Node:
    name: str
    client: ControlClient
    statuses: dict[str, ModelStatus] = field(default_factory=dict)  # its last model table
    load: NodeLoad = field(default_factory=NodeLoad)
    synced: bool = False  # has answered at least once
    reachable: bool = True  # its last sync answered
    last_ok: float = field(default_factory=time.monotonic)
    alive: set[str] | None = None  # while away: its engines that answered /health
    down_since: float | None = None  # monotonic time it went away
    demand: collections.Counter[str] = field(default_factory=collections.Counter)
    ray_free: dict[str, float] | None = None  # with `ray:`: Ray's free resources on the node

    @property
    def away(self) -> bool:
        return self.alive is not None

    def urls(self) -> set[str]:
        """Every engine URL its table lists (serving or draining)."""
        return {u for s in self.statuses.values() for u in (*s.upstreams, *s.draining)}

    def may_have(self, model: str) -> bool:
        """Its supervisor manages `model` (or has not told us yet)."""
        return not self.synced or model in self.statuses

    def view(self, model: str) -> ModelStatus | None:
        """Its part of `model` as the gateway should route it now."""
        status = self.statuses.get(model)
        if status is None:
            return None
        if self.reachable:
            return status
        if self.alive is None:  # unreachable for a moment: keep its engines, state unknown
            return status.model_copy(update={"state": "unknown"})
        upstreams = [u for u in status.upstreams if u in self.alive]
        draining = [u for u in status.draining if u in self.alive]
        state = "unknown" if upstreams else "unreachable"
        return status.model_copy(
            update={"state": state, "upstreams": upstreams, "draining": draining}
        )

    def answered(self, statuses: list[ModelStatus], load: NodeLoad) -> None:
        self.statuses = {s.name: s for s in statuses}
        self.load = load
        self.synced = self.reachable = True
        self.last_ok = time.monotonic()
        self.alive = self.down_since = None

    def snapshot(self) -> dict[str, object]:
        """For /admin/status."""
        return {
            "url": self.client.base_url,
            "reachable": self.reachable,
            "away": self.away,
            "engines_alive": None if self.alive is None else sorted(self.alive),
            "resident": self.load.resident,
            "has_room": self.load.has_room,
            "models": sorted(n for n, s in self.statuses.items() if s.upstreams),
        }


def ray_fits(node: Node, gpus: int) -> bool:
    """Whether Ray reports the free resources a new engine needs on the node: `gpus` GPUs (its
    tensor parallelism) on a GPU node; on a CPU node, some of Ray's `memory` resource (logical:
    what Ray tasks have not reserved, not the kernel's free memory). True without a Ray view."""
    free = node.ray_free
    if free is None:
        return True
    if "GPU" in free or gpus > 1:
        return free.get("GPU", 0) >= gpus
    return free.get("memory", 0) > 0


def placement_order(nodes: list[Node], model: str, gpus: int = 1) -> list[Node]:
    """Nodes to ask for a cold `model` (an engine of `gpus` GPUs), in order: reachable ones
    whose supervisor manages it; those where Ray reports the free resources it needs first
    (`ray:` only), then those with room for one more engine without evicting (free GPU and
    free resident slot), then fewest resident engines; ties keep config order."""
    candidates = [n for n in nodes if n.reachable and n.may_have(model)]
    return sorted(
        candidates,
        key=lambda n: (not ray_fits(n, gpus), not n.load.has_room, n.load.resident),
    )
