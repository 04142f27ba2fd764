"""Never "not found" for a configured model (issue 31, part 3).

The engine is killed at many points of a gateway's first seconds (before its first sync, after
its first answers) and of the restart that follows (killed again while it starts or just after
it is READY): every request for the model is held and served, or answered a retryable 503, and
none gets 404, whether the gateway's config lists the model or only the supervisor reports it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess, wait_until
from tests.fake_engine import free_port

from .helpers import SupervisorProcess, config_dict, server

pytestmark = pytest.mark.slow

# Round k kills the engine after the gateway's k-th answer: 0, before any (before its first
# sync), 1, after its first, and 3, well after; the rounds for 2 and 4 repeated those phases and
# made the test twice as long.
KILL_POINTS = (0, 1, 3)
AFTER_KILL = 4  # requests per round after the first kill


def _kill(sup: SupervisorProcess) -> int | None:
    """SIGKILL the engine's group, whatever state it is in; its pid (None: none running)."""
    pid = sup.models()["a"]["engines"][0]["pid"]
    if pid is not None:
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            return None
    return pid


def _chat(url: str) -> int:
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code


@pytest.mark.parametrize("listed", [True, False], ids=["in-gateway-config", "reported-only"])
def test_killed_engine_never_makes_the_model_not_found(tmp_path: Path, listed: bool) -> None:
    config = config_dict(
        tmp_path,
        [server("a", tmp_path, "--startup-delay", "0.3")],
        engine={"max_restarts": 1000, "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
    )
    gateway = {"port": free_port(), "routing_refresh_s": 0.5, "timeouts": {"ensure_s": 30}}
    sup = SupervisorProcess(config, tmp_path).start()
    gw_config: dict[str, Any] = {**config, "gateway": gateway}
    if not listed:  # the gateway knows the model only from the supervisor's table
        gw_config = {
            "servers": [],
            "supervisors": [{"name": "local", "url": sup.url}],
            "gateway": gateway,
        }
    statuses: Counter[int] = Counter()
    try:
        for point in KILL_POINTS:
            wait_until(lambda: sup.models()["a"]["state"] == "ready", 30, what="a ready")
            with GatewayProcess(gw_config) as gw:  # its first request follows /health at once
                for i in range(point + AFTER_KILL):
                    if i == point or i == point + 1:  # the engine, then its restart
                        _kill(sup)
                    statuses[_chat(gw.url)] += 1
    finally:
        sup.stop()
    assert statuses[404] == 0, statuses
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= len(KILL_POINTS) * AFTER_KILL, statuses
