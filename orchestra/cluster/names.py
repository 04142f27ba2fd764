"""What the Ray side and the gateway agree on: actor names, and which nodes get a supervisor.
No Ray import here (the gateway's view reads these too)."""

from __future__ import annotations

from collections.abc import Mapping

SUPERVISOR_PREFIX = "orchestra-supervisor-"
RECONCILER = "orchestra-reconciler"
HEAD_RESOURCE = "node:__internal_head__"


def supervisor_name(node_id: str) -> str:
    """One supervisor per Ray node, named for the node (a rejoining node has a new id)."""
    return SUPERVISOR_PREFIX + node_id


def node_of(actor_name: str) -> str | None:
    if not actor_name.startswith(SUPERVISOR_PREFIX):
        return None
    return actor_name.removeprefix(SUPERVISOR_PREFIX)


def eligible(resources: Mapping[str, float], node_resource: str | None) -> bool:
    """A node gets a supervisor when it has the configured custom resource, or (none configured)
    a GPU."""
    if node_resource is not None:
        return resources.get(node_resource, 0) > 0
    return resources.get("GPU", 0) > 0
