"""Which supervisors the gateway talks to, when Ray says (`ray:` in the config).

Every `ray.discover_s` the membership reads Ray's view (`ray_view.py`, in a thread) and makes
the link's nodes match it: a supervisor on a node that arrived (or rejoined) becomes a node of
the link, synced from then on; one whose node Ray marked dead is removed at once, and its
engines leave rotation with it. Nodes are named by their address, stable across a rejoin (a new
Ray node id under the same name replaces the old node). The link keeps owning the nodes; this
only tells it who they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from orchestra.control import ControlClient
from orchestra.loops import every

from .link import SupervisorLink
from .nodes import Node
from .ray_view import RaySupervisor, RayView

log = logging.getLogger(__name__)


class RayMembership:
    def __init__(
        self,
        view: RayView,
        link: SupervisorLink,
        client_for: Callable[[str], ControlClient],
        interval_s: float,
    ) -> None:
        self._view = view
        self._link = link
        self._client_for = client_for
        self._interval_s = interval_s
        self._ids: dict[str, str] = {}  # node name -> the Ray node id it was added for

    async def run(self) -> None:
        await every("ray membership", self._interval_s, self.step, 0)

    async def step(self) -> None:
        found = {f"ray-{s.address}": s for s in await asyncio.to_thread(self._view.read)}
        for name in list(self._ids):
            if name not in found or found[name].node_id != self._ids[name]:
                log.warning("node %s left the Ray cluster: out of rotation", name)
                self._link.remove_node(name)
                del self._ids[name]
        for name, sup in found.items():
            if name not in self._ids:
                log.info("node %s joined: supervisor %s", name, sup.url)
                self._link.add_node(Node(name, self._client_for(sup.url)))
                self._ids[name] = sup.node_id
            self._update(name, sup)

    def _update(self, name: str, sup: RaySupervisor) -> None:
        for node in self._link.nodes:
            if node.name == name:
                node.ray_free = sup.available
