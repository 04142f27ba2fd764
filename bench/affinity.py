"""Session stickiness through a two-worker gateway (fake engines), and `gateway_from_config`,
the gateway starter of the legs that write their own config (bench/prefix_cache.py's too).
"""

from __future__ import annotations

import collections
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.run import REPO, wait_healthy
from orchestra.lifetime import spawn, stop_group


@contextmanager
def gateway_from_config(config: dict[str, Any], tmp: Path) -> Iterator[str]:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with (tmp / "gateway.log").open("wb") as out:
        proc = spawn(
            [sys.executable, "-m", "orchestra.gateway", "--config", str(path)], cwd=REPO, stdout=out
        )
    url = f"http://127.0.0.1:{config['gateway']['port']}"
    try:
        wait_healthy(proc, url, 60.0, "gateway")
        yield url
    finally:
        stop_group(proc, 30.0)


def session_figures(sessions: int = 40, per_session: int = 10) -> dict[str, Any]:
    """Share of each session's requests on its most-used replica, through 2 gateway workers
    (a new connection per request, so both workers route)."""
    from tests.fake_engine import FakeEngineProcess, free_port

    with tempfile.TemporaryDirectory(prefix="bench-session-") as name, ExitStack() as stack:
        engines = [
            stack.enter_context(FakeEngineProcess("--served-model-name", "s", name=n))
            for n in ("a", "b")
        ]
        config = {
            "gateway": {"port": free_port(), "workers": 2},
            "batch": {"enabled": False},  # the Batch API keeps the gateway to one process
            "servers": [
                {"name": "s", "balancing": "session", "replicas": [{"url": e.url} for e in engines]}
            ],
        }
        gateway = stack.enter_context(gateway_from_config(config, Path(name)))
        served: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        body = {"model": "s", "prompt": "x", "max_tokens": 1}
        for n in range(per_session):
            for s in range(sessions):  # fewer than the 100 records a fake engine keeps
                headers = {"x-session-id": f"s{s}", "x-request-id": f"s{s}-{n}"}
                httpx.post(gateway + "/v1/completions", json=body, headers=headers, timeout=30)
            for engine in engines:
                for record in engine.stats()["records"]:
                    if record["path"] == "/v1/completions":
                        served[record["x_request_id"].rsplit("-", 1)[0]][engine.name] += 1
                engine.reset_stats()
        return _stickiness(served)


def _stickiness(served: dict[str, collections.Counter[str]]) -> dict[str, Any]:
    shares = [max(c.values()) / sum(c.values()) for c in served.values() if sum(c.values())]
    homes = collections.Counter(c.most_common(1)[0][0] for c in served.values() if c)
    return {
        "sessions": len(shares),
        "sessions_per_replica": dict(homes),
        "mean_share_on_one_replica": round(sum(shares) / len(shares), 4) if shares else None,
        "min_share_on_one_replica": round(min(shares), 4) if shares else None,
    }
