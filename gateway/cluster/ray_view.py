"""The gateway's read of a Ray cluster: the alive nodes and the supervisor each one runs.

The gateway joins the cluster as a Ray driver (`ray.init(address, namespace)`; it needs Ray's
token like every Ray process) and reads two things Ray owns: the nodes and whether each is
alive (`ray.nodes()`, the GCS's view, which follows node death and arrival), and the named
supervisor actors (`orchestra-supervisor-<node id>`, `orchestra/cluster/names.py`). A
supervisor counts only while its node is alive; its control URL is asked of the actor once and
kept. Every call blocks: `membership.py` runs them in a thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from orchestra.cluster.names import node_of
from orchestra.config import RayClusterConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RaySupervisor:
    node_id: str
    address: str  # the node's address
    url: str  # its control API
    resources: dict[str, float]  # Ray's total resources on the node
    available: dict[str, float]  # Ray's free resources on the node


class RayView:
    def __init__(self, config: RayClusterConfig) -> None:
        self._config = config
        self._urls: dict[str, str] = {}  # actor name -> control URL (fixed for its life)
        self._connected = False

    def read(self) -> list[RaySupervisor]:
        """The supervisors on alive nodes, in node-id order."""
        import ray

        if not self._connected:
            ray.init(
                address=self._config.address,
                namespace=self._config.namespace,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            self._connected = True
        nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
        free = self._available(ray)
        found: list[RaySupervisor] = []
        for name in ray.util.list_named_actors():  # this namespace's, by name
            node_id = node_of(name)
            if node_id is None or node_id not in nodes:
                continue
            url = self._urls.get(name) or self._ask_url(ray, name)
            if url is None:
                continue
            node = nodes[node_id]
            found.append(
                RaySupervisor(
                    node_id=node_id,
                    address=node["NodeManagerAddress"],
                    url=url,
                    resources=dict(node["Resources"]),
                    available=free.get(node_id, {}),
                )
            )
        live = {s.node_id for s in found}
        self._urls = {k: v for k, v in self._urls.items() if node_of(k) in live}
        return sorted(found, key=lambda s: s.node_id)

    def _ask_url(self, ray: Any, name: str) -> str | None:
        try:
            actor = ray.get_actor(name, namespace=self._config.namespace)
            info = ray.get(actor.info.remote(), timeout=self._config.call_timeout_s)
        except Exception as exc:  # starting, or dying with its node: asked again next round
            log.info("supervisor actor %s does not answer yet: %s", name, exc)
            return None
        url = str(info["url"])
        self._urls[name] = url
        return url

    def _available(self, ray: Any) -> dict[str, dict[str, float]]:
        """Free resources per node, from the GCS's resource view."""
        try:
            from ray._private.state import available_resources_per_node

            per_node: dict[str, dict[str, float]] = available_resources_per_node()
        except Exception:  # a Ray without it: placement falls back to the supervisors' load
            return {}
        return per_node
