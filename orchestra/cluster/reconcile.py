"""Every eligible Ray node gets one supervisor actor: the reconciler, and `up`/`down`.

`Reconciler` is itself a detached named actor (pinned to the head node, which outlives the
workers): every `ray.reconcile_s` it reads Ray's alive nodes and starts a `SupervisorActor` on
each eligible node that has none (a node that joined later, or rejoined under a new id). A
supervisor on a dead node died with it; nothing needs removing. `up` runs one round itself (so
it returns once today's nodes are served) and then leaves the reconciler running; `down` kills
the reconciler first (so nothing comes back), then stops every supervisor (and its engines).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestra.config import OrchestraConfig, RayClusterConfig

from .actor import SupervisorActor
from .names import HEAD_RESOURCE, RECONCILER, eligible, node_of, supervisor_name

log = logging.getLogger(__name__)


def absolute_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The config's state and log folders made absolute against `ray up`'s directory (an actor
    runs in a directory of Ray's)."""
    out = {**raw}
    folders = (("supervisor", "state_dir", "run"), ("engine", "log_dir", "logs"))
    for section, key, default in folders:
        part = dict(out.get(section) or {})
        part[key] = str(base / Path(part.get(key, default)))
        out[section] = part
    return out


def stop_timeout_s(config: OrchestraConfig) -> float:
    """How long a supervisor's SIGTERM may take: its engines' stop and its own requests."""
    return config.engine.stop_timeout_s + config.supervisor.shutdown_timeout_s + 5


class Reconciler:
    def __init__(self, raw: dict[str, Any], ray_config: dict[str, Any], stop_s: float) -> None:
        self.raw = raw
        self.ray = RayClusterConfig.model_validate(ray_config)
        self.stop_s = stop_s

    def start(self) -> None:
        """In the actor: run the rounds in a thread of its own, so they do not hang on the call
        of the `ray up` that created it (which exits)."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        threading.Thread(target=self.run, name="reconcile", daemon=True).start()

    def step(self) -> list[dict[str, Any]]:
        """Start a supervisor on each alive eligible node without one; their infos."""
        started: list[dict[str, Any]] = []
        have = {node_of(name) for name in ray.util.list_named_actors()}
        for node in ray.nodes():
            if not node["Alive"] or node["NodeID"] in have:
                continue
            if not eligible(node["Resources"], self.ray.node_resource):
                continue
            info = self._start(node["NodeID"], node["NodeManagerAddress"])
            if info is not None:
                started.append(info)
        return started

    def _start(self, node_id: str, address: str) -> dict[str, Any] | None:
        actor: Any = (
            ray.remote(SupervisorActor)
            .options(
                name=supervisor_name(node_id),
                namespace=self.ray.namespace,
                lifetime="detached",
                num_cpus=0,
                max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            )
            .remote(self.raw, address, self.stop_s)
        )
        timeout = self.ray.start_timeout_s
        try:
            info: dict[str, Any] = ray.get(
                actor.wait_ready.remote(timeout), timeout=timeout + self.ray.call_timeout_s
            )
        except Exception as exc:  # its error, or Ray's: retried next round
            log.error("no supervisor on node %s (%s): %s", address, node_id, exc)
            ray.kill(actor)
            return None
        log.info("supervisor on node %s: %s", address, info["url"])
        return info

    def run(self) -> None:
        while True:
            try:
                self.step()
            except Exception:  # a round that fails (GCS restarting): the next one goes on
                log.exception("reconcile round failed")
            time.sleep(self.ray.reconcile_s)


def connect(ray_config: RayClusterConfig) -> None:
    ray.init(
        address=ray_config.address,
        namespace=ray_config.namespace,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )


def up(
    raw: dict[str, Any], config: OrchestraConfig, ray_config: RayClusterConfig
) -> list[dict[str, Any]]:
    """Supervisors on today's nodes, and the reconciler for those to come. Replaces a
    reconciler already running (supervisors already up keep running)."""
    with_ray = {**raw, "ray": ray_config.model_dump()}
    reconciler = Reconciler(with_ray, ray_config.model_dump(), stop_timeout_s(config))
    _kill_reconciler(ray_config)
    started = reconciler.step()
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and HEAD_RESOURCE in n["Resources"])
    actor: Any = (
        ray.remote(Reconciler)
        .options(
            name=RECONCILER,
            namespace=ray_config.namespace,
            lifetime="detached",
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False),
        )
        .remote(with_ray, ray_config.model_dump(), stop_timeout_s(config))
    )
    ray.get(actor.start.remote(), timeout=ray_config.call_timeout_s)  # until `down` kills it
    return started


def supervisors(ray_config: RayClusterConfig) -> list[dict[str, Any]]:
    """The live supervisors' infos, from their actors."""
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    found: list[dict[str, Any]] = []
    for name in ray.util.list_named_actors():
        if node_of(name) in alive:
            actor: Any = ray.get_actor(name, namespace=ray_config.namespace)
            found.append(ray.get(actor.info.remote(), timeout=ray_config.call_timeout_s))
    return found


def down(ray_config: RayClusterConfig, timeout_s: float) -> list[str]:
    """Stop the reconciler, then every supervisor and its engines; the nodes' addresses."""
    _kill_reconciler(ray_config)
    stopped: list[str] = []
    for name in ray.util.list_named_actors():
        if node_of(name) is None:
            continue
        actor: Any = ray.get_actor(name, namespace=ray_config.namespace)
        try:
            info: dict[str, Any] = ray.get(actor.info.remote(), timeout=ray_config.call_timeout_s)
            ray.get(actor.stop.remote(), timeout=timeout_s)
            stopped.append(str(info["address"]))
        except Exception as exc:  # its node is gone: the actor with it
            log.warning("supervisor %s: %s", name, exc)
        ray.kill(actor)
    return stopped


def _kill_reconciler(ray_config: RayClusterConfig) -> None:
    try:
        ray.kill(ray.get_actor(RECONCILER, namespace=ray_config.namespace))
    except ValueError:  # none running
        pass
