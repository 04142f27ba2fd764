"""`gateway.workers: N`: N gateway processes on one port (SO_REUSEPORT), each with its own
connection pools, balancer and health state.

What must stay correct across processes is divided exactly: worker i of N gets
`total // N (+1 for the first total % N)` of every API key's requests/tokens per minute and of
every model's `max_inflight`/`max_queue`, so the sums are the configured limits. (The kernel
spreads connections, not requests: a client on one keep-alive connection meets one worker's
share.) With `gateway.redis_url` the rate limits live whole in Redis instead
(`shared_ratelimit.py`). Metrics are aggregated with prometheus-client's multiprocess mode:
every worker writes its samples to a shared directory and `/metrics` on any worker renders all.

The parent only starts, watches and stops the workers: SIGTERM/SIGINT is passed on (each
drains), a worker that dies is restarted, and one that cannot start (port taken) ends the lot.
The workers stay in the parent's process group, so stopping the group stops them all.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from prometheus_client import multiprocess

from orchestra.config import ConfigError, OrchestraConfig, ServerConfig
from orchestra.lifetime import die_with_parent

log = logging.getLogger(__name__)

MAX_DEFAULT_WORKERS = 8
_QUICK_EXIT_S = 5.0  # a worker dead this soon after its start did not come up
_RESTART_DELAY_S = 0.5
_STOP_TIMEOUT_PAD_S = 2.0  # within `orchestra up`'s drain_timeout_s + 5 for the gateway


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _limits(config: OrchestraConfig) -> Iterator[tuple[str, int]]:
    """(YAML path, value) of every limit that is divided among workers (zero shares refused)."""
    shared = config.gateway.redis_url is not None  # rate limits held in Redis, not divided
    for i, key in enumerate([] if shared else config.gateway.api_keys):
        for field in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(key, field)
            if value is not None:
                yield f"gateway.api_keys[{i}].{field}", value
    for section, index, server in config.iter_servers_with_path():
        if server.max_inflight is not None:
            yield f"{section}[{index}].max_inflight", server.max_inflight


def worker_count(config: OrchestraConfig) -> int:
    """`gateway.workers`, or one per core (at most 8) and no more than the smallest limit, so
    every worker's share of every limit is at least 1. One while the Batch API is on."""
    limits = list(_limits(config))
    wanted = config.gateway.workers
    if config.batch.enabled:  # the Batch API's store belongs to one gateway process
        if wanted is not None and wanted > 1:
            raise ConfigError(
                f"gateway.workers: {wanted} needs batch.enabled: false (the batch store is "
                "one gateway process's)"
            )
        return 1
    if wanted is None:
        return max(1, min([cores(), MAX_DEFAULT_WORKERS, *(v for _, v in limits)]))
    for path, value in limits:
        if value < wanted:
            raise ConfigError(
                f"{path}: {value} cannot be divided among gateway.workers={wanted} processes "
                "(each needs a share of at least 1); lower gateway.workers"
            )
    return wanted


def share(total: int, index: int, count: int) -> int:
    return total // count + (1 if index < total % count else 0)


def divide(config: OrchestraConfig, index: int, count: int) -> OrchestraConfig:
    """Worker `index` of `count`'s config: its exact share of every divided limit."""
    if count == 1:
        return config

    def part(value: int | None) -> int | None:
        return None if value is None else share(value, index, count)

    keys = (
        config.gateway.api_keys
        if config.gateway.redis_url
        else [
            key.model_copy(
                update={
                    "requests_per_minute": part(key.requests_per_minute),
                    "tokens_per_minute": part(key.tokens_per_minute),
                }
            )
            for key in config.gateway.api_keys
        ]
    )

    def servers(section: list[ServerConfig]) -> list[ServerConfig]:
        return [
            s.model_copy(
                update={"max_inflight": part(s.max_inflight), "max_queue": part(s.max_queue)}
            )
            for s in section
        ]

    return config.model_copy(
        update={
            "gateway": config.gateway.model_copy(update={"api_keys": keys}),
            "servers": servers(config.servers),
            "rotation_pool": servers(config.rotation_pool),
        }
    )


def reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


_PARENT_ENV = "ORCHESTRA_GATEWAY_PARENT"  # the parent's pid, for its workers


def exit_with_parent() -> None:
    """In a worker: drain and exit (SIGTERM) when the parent dies, even by SIGKILL, even before
    this worker got here (then its parent is no longer the pid it was given)."""
    die_with_parent(int(os.environ.get(_PARENT_ENV) or os.getppid()), signal.SIGTERM)


class Workers:
    """The parent: starts `count` workers (`python -m orchestra.gateway --worker i/N`)."""

    def __init__(self, config_path: str, count: int, stop_timeout_s: float) -> None:
        self.config_path = config_path
        self.count = count
        self.stop_timeout_s = stop_timeout_s + _STOP_TIMEOUT_PAD_S
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._started: dict[int, float] = {}
        self._stopping = False
        self._metrics_dir = tempfile.mkdtemp(prefix="orchestra-gw-metrics-")

    def _start(self, index: int) -> None:
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir,
            _PARENT_ENV: str(os.getpid()),
        }
        argv = [sys.executable, "-m", "orchestra.gateway", "--config", self.config_path]
        argv += ["--worker", f"{index}/{self.count}"]
        self._procs[index] = subprocess.Popen(argv, env=env)
        self._started[index] = time.monotonic()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            for index in range(self.count):
                self._start(index)
            log.info("gateway: %d workers on one port", self.count)
            return self._watch()
        finally:
            self._stop_all()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _watch(self) -> int:
        while not self._stopping:
            for index, proc in list(self._procs.items()):
                code = proc.poll()
                if code is None or self._stopping:
                    continue
                multiprocess.mark_process_dead(proc.pid, self._metrics_dir)
                if time.monotonic() - self._started[index] < _QUICK_EXIT_S:
                    log.error("gateway worker %d exited %s at start; stopping", index, code)
                    return 1
                log.warning("gateway worker %d exited %s; restarting it", index, code)
                time.sleep(_RESTART_DELAY_S)
                self._start(index)
            time.sleep(0.2)
        return 0

    def _stop_all(self) -> None:
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
