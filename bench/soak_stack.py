"""The soak's stack (`bench/soak.py`): fake engines, a supervisor and a gateway, all on free
ports and in one temporary folder, started in order and stopped in reverse.

The caps are set low so the soak fills every bounded map past its cap within minutes and shows
that it holds there: 2,000 prefix blocks per prefix_aware model, 300 stored responses, 256 KV
blocks per engine (the fake engine evicts, and says so in its events).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestra.gateway.protection.keys import hash_key
from orchestra.health import wait_healthy_sync
from orchestra.lifetime import spawn, stop_group
from tests.conftest import GatewayProcess, fast_gateway_section, wait_until
from tests.fake_engine import FakeEngineProcess, free_port
from tests.integration.supervisor.helpers import config_dict, server

from .soak_traffic import Names

ADMIN_KEY = "sk-soak-admin"
SUPERVISOR_TOKEN = "soak-supervisor-token"
REPO = Path(__file__).resolve().parent.parent
FAKE = ["--token-rate", "400"]  # 64 tokens: ~0.16 s, long enough to drop a stream midway


@dataclass(frozen=True)
class Stack:
    gateway_url: str
    gateway_pid: int
    supervisor_url: str
    supervisor_pid: int


def _kv_engine(name: str) -> tuple[FakeEngineProcess, dict[str, Any]]:
    pub, replay = free_port(), free_port()
    events = {"enable_kv_cache_events": True, "endpoint": f"tcp://*:{pub}"}
    events["replay_endpoint"] = f"tcp://*:{replay}"
    engine = FakeEngineProcess(
        "--kv-events-config", json.dumps(events), "--num-gpu-blocks-override", "256", *FAKE,
        name=name,
    )  # fmt: skip
    replica = {
        "url": engine.url,
        "kv_events": {"publisher": f"tcp://127.0.0.1:{pub}", "replay": f"tcp://127.0.0.1:{replay}"},
    }
    return engine, replica


def _config(tmp: Path, names: Names, static: list[str], kv: list[dict[str, Any]]) -> Any:
    managed = [server(n, tmp, *FAKE, sleep_mode=True) for n in (names.managed, names.other)]
    config = config_dict(
        tmp,
        managed[:1],
        pool=managed[1:],
        supervisor={
            "max_resident": 1,
            "on_supervisor_exit": "kill",
            "admin_token": SUPERVISOR_TOKEN,
            "drain_timeout_s": 5,
            "swap_quantum_s": 0,  # evict on arrival: the soak's swaps are its own schedule
        },
    )
    replicas = [{"url": url} for url in static]
    affinity = {"table_size": 2000}
    config["servers"] += [
        {"name": names.prefix, "balancing": "prefix_aware", "affinity": affinity,
         "replicas": replicas},
        {"name": names.session, "balancing": "session", "replicas": replicas},
        {"name": names.kv, "balancing": "kv_aware", "affinity": affinity, "replicas": kv,
         "kv": {"max_blocks_per_engine": 256}},
    ]  # fmt: skip
    config["ensembles"] = [{"name": names.ensemble, "models": [names.prefix, names.session]}]
    config["gateway"] = fast_gateway_section(
        free_port(),
        timeouts={"first_byte_s": 30.0, "total_s": 120.0, "ensure_s": 60.0},
        upstream_keepalive_s=1.0,
        routing_refresh_s=0.5,
        api_keys=[
            {"name": "main", "sha256": hash_key(names.key)},
            {"name": "limited", "sha256": hash_key(names.limited_key), "requests_per_minute": 30},
        ],
        admin_key_sha256=hash_key(ADMIN_KEY),
        responses={"max_stored": 300},
    )
    config["batch"] = {"dir": str(tmp / "batch"), "poll_s": 0.2, "gauge_poll_s": 0.5}
    return config


@contextlib.contextmanager
def soak_stack(tmp: Path) -> Iterator[Stack]:
    names = Names()
    with contextlib.ExitStack() as stack:
        static = [
            stack.enter_context(
                FakeEngineProcess("--served-model-name", names.prefix, names.session, *FAKE)
            )
            for _ in range(2)
        ]
        kv = []
        for _ in range(2):
            engine, replica = _kv_engine(names.kv)
            stack.enter_context(engine)
            kv.append(replica)
        config = _config(tmp, names, [e.url for e in static], kv)
        path = tmp / "soak.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = [sys.executable, "-m", "orchestra.supervisor", "--config", str(path)]
        with (tmp / "supervisor.log").open("wb") as log:
            supervisor = spawn(argv, stdout=log, cwd=REPO)
        stack.callback(stop_group, supervisor, 30.0)  # it stops its engines on SIGTERM
        sup_url = f"http://127.0.0.1:{config['supervisor']['port']}"
        wait_healthy_sync(sup_url, timeout_s=30, interval_s=0.1, probe_timeout_s=2)
        gateway = stack.enter_context(GatewayProcess(config))
        assert gateway.proc is not None
        wait_until(lambda: gateway.health()["models"].get(names.managed) == "ready", 60, 0.1)
        yield Stack(gateway.url, gateway.proc.pid, sup_url, supervisor.pid)
