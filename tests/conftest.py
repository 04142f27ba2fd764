"""Shared test helpers: paths, polling, and a real gateway (`python -m orchestra.gateway`)
as a subprocess.

Fake engines come from `tests/fake_engine.py` (`FakeEngineProcess`). Nothing here sleeps a
fixed time to synchronise: every wait polls a condition against a deadline.

`make test` runs the suite on pytest-xdist workers with `--dist loadgroup`: the hook at the end
(`pytest_collection_modifyitems`) says which tests must share a worker and in what order the
groups are handed out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from orchestra.health import NotAlive, wait_healthy_sync
from orchestra.lifetime import spawn, stop_group
from tests.fake_engine import FakeEngineProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
# The user's original config (seed 004), copied here: a clone has nothing beside it.
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SEED_CONFIG = FIXTURES / "seed_vllm_config.yaml"

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy; return it, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def fast_gateway_section(port: int, **overrides: Any) -> dict[str, Any]:
    """A `gateway:` config section with small timeouts so failure tests stay fast."""
    section: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "timeouts": {
            "connect_s": 1.0,
            "first_byte_s": 5.0,
            "idle_read_s": 5.0,
            "total_s": 30.0,
            "health_probe_s": 0.5,
        },
        "retries": {"max_attempts": 3, "backoff_s": 0.0},
        "unhealthy_cooldown_s": 0.2,
        "health_check_interval_s": 0.1,
        "drain_timeout_s": 1,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    return section


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        out[name, frozenset(_LABEL.findall(labels or ""))] = float(value)
    return out


def scrape_total(url: str, name: str, timeout: float = 10.0) -> float:
    """The sum over every label set of the samples named `name` on `url`'s /metrics (an
    engine's `vllm:...` counters, a supervisor's `orchestra_...` ones)."""
    text = httpx.get(url + "/metrics", timeout=timeout).text
    return sum(v for (sample, _), v in parse_metrics(text).items() if sample == name)


class GatewayProcess:
    """`python -m orchestra.gateway --config FILE` as a subprocess, ready once `/health`
    answers 200.

    `config` is written to a temporary YAML file (its `gateway.port` is filled with a free port
    when absent); `config_path` runs an existing file unchanged. `port` is where it is polled
    (for a port that comes from the environment, `ORCHESTRA_GATEWAY__PORT`).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        config_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="orchestra-gw-")
        self.log_path = Path(self._dir.name) / "gateway.log"
        self.config: dict[str, Any] | None = None
        if config_path is None:
            self.config = dict(config or {})
            section = dict(self.config.get("gateway") or {})
            section.setdefault("port", port or free_port())
            section.setdefault("workers", 1)  # tests of several workers say so
            # The usage ledger's SQLite file: this gateway's own (no path shared by tests).
            section.setdefault("usage", {"dir": self._dir.name})
            self.config["gateway"] = section
            port = port or int(section["port"])
            config_path = Path(self._dir.name) / "config.yaml"
        self.config_path = config_path
        assert port, "give the port the gateway will listen on"
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = dict(env or {})
        if self.config is None:  # a file as is: one worker unless the test says otherwise
            self.env.setdefault("ORCHESTRA_GATEWAY__WORKERS", "1")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_timeout = 20.0  # for `with`; several workers on a busy machine need more

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        if self.proc is not None and self.proc.poll() is None:
            return self  # already running: `with gw.start():` must not start a second one
        if self.config is not None:
            self.config_path.write_text(yaml.safe_dump(self.config))
        with self.log_path.open("wb") as log:
            self.proc = spawn(
                [sys.executable, "-m", "orchestra.gateway", "--config", str(self.config_path)],
                cwd=REPO_ROOT,
                stdout=log,
                env={**os.environ, **self.env},
            )
        proc = self.proc
        try:
            wait_healthy_sync(
                self.url,
                timeout_s=timeout,
                interval_s=0.05,
                probe_timeout_s=1.0,
                is_alive=lambda: proc.poll() is None,
            )
        except NotAlive:
            raise RuntimeError(f"gateway exited {proc.returncode}:\n{self.output()}") from None
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}\n{self.output()}") from None
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self) -> dict[str, Any]:
        reply = httpx.get(self.url + "/health", timeout=5.0)
        reply.raise_for_status()
        return dict(reply.json())

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_metrics(httpx.get(self.url + "/metrics", timeout=5.0).text)

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value (0.0 when absent: a labelled child not created yet)."""
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def wait_workers(self, count: int, timeout: float = 90.0) -> None:
        """Wait until `count` gateway workers (`gateway.workers`) have started serving."""
        wait_until(
            lambda: self.output().count("Application startup complete.") >= count,
            timeout=timeout,
            what=f"{count} gateway workers started",
        )

    def wait_ready(self, *models: str, timeout: float = 10.0) -> None:
        """Wait until `models` (default: all) report `ready`: replicas probed back after a fault."""

        def ready() -> bool:
            states = self.health()["models"]
            return all(states[m] == "ready" for m in models or states)

        wait_until(ready, timeout=timeout, what=f"gateway models {models or 'all'} ready")

    def wait_upstream_healthy(self, model: str, url: str, timeout: float = 10.0) -> None:
        """Wait until the gateway takes `url` for `model` again (never marked down counts)."""
        name = "orchestra_upstream_healthy"
        wait_until(
            lambda: (
                self.metrics().get((name, frozenset({"model": model, "upstream": url}.items())))
                in (None, 1.0)
            ),
            timeout=timeout,
            what=f"{url} healthy for {model}",
        )

    def stop(self) -> int | None:
        code = stop_group(self.proc, 10.0) if self.proc is not None else None
        self._dir.cleanup()
        return code

    def __enter__(self) -> GatewayProcess:
        return self.start(self.start_timeout)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reset_engine(engine: FakeEngineProcess) -> None:
    """Clear faults and counters of a shared fake engine between tests.

    Waits for requests a previous test left behind (a hung stream the gateway just dropped) to
    finish first, so they cannot push counters like `active` below zero after the reset.
    """
    engine.set_fault("none")
    wait_until(lambda: engine.stats()["active"] == 0, what="fake engine idle")
    engine._call("/fake/reset", {})
    engine._call("/fake/config", {"token_rate": 0, "ttft_ms": 0})


@pytest.fixture(scope="session")
def seed_config_path() -> Path:
    assert SEED_CONFIG.is_file(), f"seed fixture missing at {SEED_CONFIG}"
    return SEED_CONFIG


@pytest.fixture
def fake_engine_factory() -> Iterator[Callable[..., FakeEngineProcess]]:
    """Start fake engines for one test; all are stopped at its end."""
    started: list[FakeEngineProcess] = []

    def make(*args: str, name: str = "fake-model", port: int | None = None) -> FakeEngineProcess:
        engine = FakeEngineProcess(*args, name=name, port=port).start()
        started.append(engine)
        return engine

    yield make
    for engine in started:
        engine.stop()


# --- Parallel runs (pytest-xdist, `--dist loadgroup --no-loadscope-reorder`) ---------------
# A group runs on one worker, in order, so what its tests share is started once: a module's (or
# the engines package's) scoped fixtures, the e2e session stack. Unit tests are not grouped:
# each is handed to whichever worker is free. Groups are handed out in collection order, so the
# longest (the real engines, the Ray and namespace clusters) are sorted first and the unit tests
# last, where they fill the workers that finish early.
E2E_SESSION = "e2e-session-stack"  # tests/e2e/conftest.py's session `stack`
E2E_OWN = "e2e-own-stacks"  # e2e modules with a stack of their own: at most one at a time
CLUSTERS = "ray-and-namespaces"  # local Ray clusters and tests/netns.py nodes, one at a time


def _on_session_stack(item: pytest.Item) -> bool:
    """Whether `item` uses tests/e2e/conftest.py's session `stack` (not a module's own)."""
    uses = "stack" in getattr(item, "fixturenames", ())
    module = getattr(item, "module", None)
    return uses and module is not None and not hasattr(module, "stack")


def _group(item: pytest.Item) -> tuple[int, str | None]:
    """(rank, xdist group) of a test: lower ranks are handed out first; None: no group."""
    parts = item.path.relative_to(REPO_ROOT / "tests").parts
    if parts[0] == "e2e":
        return 0, E2E_SESSION if _on_session_stack(item) else E2E_OWN
    if parts[:2] == ("integration", "multinode") or parts[-1] == "test_ray_batch.py":
        return 1, CLUSTERS
    if parts[0] == "unit":
        return 4, None
    # The engines' tests share package-scoped fixtures (one Whisper engine for the package).
    scope = "/".join(parts[:2]) if parts[:2] == ("integration", "engines") else "/".join(parts)
    return (2 if item.get_closest_marker("slow") else 3), scope


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    groups = {item: _group(item) for item in items}
    for item, (_, name) in groups.items():
        if name is not None:
            item.add_marker(pytest.mark.xdist_group(name))
    if hasattr(config, "workerinput"):  # an xdist worker: the order is the hand-out order
        rank: dict[str | None, int] = {}
        for r, name in groups.values():
            rank[name] = min(r, rank.get(name, r))
        items.sort(key=lambda item: rank[groups[item][1]] if groups[item][1] else 4)
    else:  # serial: the e2e session stack's tests last (tests/e2e/conftest.py says why)
        items.sort(key=_on_session_stack)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop a worker whose groups did not take (xdist's loadgroup writes the group into the node
    id; pytest 9.2 ignores that, pytest-xdist issue 1386): every group's tests would be spread
    over all workers and each would start its own e2e stack."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    grouped = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group")]
    lost = [nodeid for nodeid in grouped if "@" not in nodeid]
    if lost:
        raise pytest.UsageError(f"xdist groups not applied ({lost[0]} ...): see pyproject.toml")
