"""Measured figures for the closing note (printed; run with -s to see them):

- ensure-to-served: a cold fake engine with a 2 s startup, through a real supervisor over HTTP:
  POST /ensure, then one chat completion on the returned upstream. Compared with the same engine
  launched directly (spawn, /health polled every 2 ms, one chat): the difference is what the
  supervisor adds (target: <= 150 ms over the engine's own startup).
- readiness detection: the time from the engine first answering /health (seen by a 2 ms poller
  in this test) to the supervisor's ensure reply, at the default 0.1 s poll interval and 0.02 s.
- page cache: reading a 256 MB file evicted vs warm.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.supervisor.pagecache import evict_file, file_residency, preload_file
from tests.fake_engine import free_port

from .helpers import FAKE_ENGINE, SupervisorProcess, config_dict, server

STARTUP_S = 2.0
RUNS = 5
FIGURES: dict[str, Any] = {}


class HealthWatcher(threading.Thread):
    """Polls a URL's /health every 2 ms; records when it first answers 200."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.first_ok, self.stop = url, 0.0, threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=0.5) as c:
            while not self.stop.is_set():
                try:
                    if c.get(self.url + "/health").status_code == 200:
                        self.first_ok = time.monotonic()
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.002)


def _chat(client: httpx.Client, url: str, model: str) -> None:
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert client.post(url + "/v1/chat/completions", json=chat).status_code == 200


def _direct_served(client: httpx.Client) -> float:
    """The same engine launched by hand: spawn, /health polled every 2 ms, one chat served."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(FAKE_ENGINE),
            "m",
            "--port",
            str(port),
            "--startup-delay",
            str(STARTUP_S),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    HealthWatcher(url).run()
    _chat(client, url, "m")
    served = time.monotonic() - began
    proc.terminate()
    proc.wait()
    return served


def _served_once(
    client: httpx.Client, sup: SupervisorProcess, name: str, port: int
) -> tuple[float, float, float]:
    """POST /ensure on a cold model, then one chat on the upstream it returns."""
    watcher = HealthWatcher(f"http://127.0.0.1:{port}")
    watcher.start()
    began = time.monotonic()
    r = client.post(f"{sup.url}/models/{name}/ensure", params={"timeout_s": 30})
    ensured = time.monotonic()
    assert r.status_code == 200, r.text
    (url,) = r.json()["upstreams"]
    _chat(client, url, name)
    served = time.monotonic() - began
    watcher.join(5)
    client.post(f"{sup.url}/models/{name}/unload")
    return served, ensured - watcher.first_ok, watcher.first_ok - began


@pytest.mark.slow
@pytest.mark.parametrize("poll_s", [0.1, 0.02])
def test_ensure_to_served_and_readiness_detection(tmp_path: Path, poll_s: float) -> None:
    model = server("cold", tmp_path, "--startup-delay", str(STARTUP_S))
    cfg = config_dict(tmp_path, [], pool=[model], engine={"health_poll_interval_s": poll_s})
    sup = SupervisorProcess(cfg, tmp_path).start()
    runs, directs = [], []
    try:
        with httpx.Client(timeout=40) as client:
            for _ in range(RUNS):  # interleaved, so load drifts affect both alike
                directs.append(_direct_served(client))
                runs.append(_served_once(client, sup, "cold", model["port"]))
    finally:
        sup.stop()
    direct = statistics.median(directs)
    served = statistics.median(r[0] for r in runs)
    detection = [r[1] for r in runs]
    FIGURES[f"poll_{poll_s}s"] = {
        "direct_spawn_to_served_s": round(direct, 3),
        "ensure_to_served_s": round(served, 3),
        "supervisor_overhead_ms": round((served - direct) * 1000, 1),
        "ensure_to_engine_healthy_s": round(statistics.median(r[2] for r in runs), 3),
        "readiness_detection_ms": [round(d * 1000, 1) for d in detection],
    }
    print(json.dumps(FIGURES, indent=1))
    assert served - direct < 0.5
    assert max(detection) < poll_s + 0.1


@pytest.mark.slow
def test_page_cache_evicted_vs_warm_read(tmp_path: Path) -> None:
    f = tmp_path / "weights.safetensors"
    block = os.urandom(1 << 20)
    with f.open("wb") as out:
        for _ in range(256):
            out.write(block)
    evict_file(f)
    cold_fraction = file_residency(f).fraction
    began = time.monotonic()
    preload_file(f, "read", 16 << 20)
    evicted_s = time.monotonic() - began
    warm_fraction = file_residency(f).fraction
    began = time.monotonic()
    preload_file(f, "read", 16 << 20)
    warm_s = time.monotonic() - began
    FIGURES["page_cache_256MB"] = {
        "fraction_evicted": round(cold_fraction, 3),
        "fraction_after_preload": round(warm_fraction, 3),
        "read_evicted_s": round(evicted_s, 3),
        "read_warm_s": round(warm_s, 3),
    }
    print(json.dumps(FIGURES, indent=1))
    assert warm_fraction > 0.95 and warm_s < evicted_s
