"""Swap figures through the supervisor's control API (`orchestra.control.ControlClient`, with the
admin token): cold start with the page cache evicted vs warm, wake from sleep, and the first
request to an unloaded model through the gateway (plain HTTP, as a client would send it)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestra.control import ControlClient, ControlError, call_sync

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
ACTION_TIMEOUT_S = 900.0  # a real engine's cold start can take minutes


def _post(url: str, payload: Any, timeout: float = ACTION_TIMEOUT_S) -> Any:
    """Plain HTTP to the gateway (what a client would send)."""
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return round(time.perf_counter() - t0, 3)


def _weight_files(path: str | None) -> list[Path]:
    if not path or not Path(path).exists():
        return []
    root = Path(path)
    files = [root] if root.is_file() else list(root.rglob("*"))
    return [f for f in files if f.is_file() and f.suffix in WEIGHT_SUFFIXES]


def evict_page_cache(files: list[Path]) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_page_cache(files: list[Path]) -> None:
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(16 << 20):
                pass


def swap_figures(
    supervisor_url: str,
    model: str,
    gateway_url: str | None,
    model_path: str | None,
    admin_token: str | None = None,
    action_timeout_s: float = ACTION_TIMEOUT_S,
) -> dict[str, Any]:
    """Each figure in seconds, or {"error": ...} when the server refuses it."""
    client = ControlClient(supervisor_url, admin_token, timeout_s=30.0)
    out: dict[str, Any] = {"model": model}
    files = _weight_files(model_path)

    def act(action: str) -> None:
        call_sync(client, lambda c: c.action(model, action, action_timeout_s))

    def figure(name: str, fn: Callable[[], float]) -> None:
        try:
            out[name] = fn()
        except (ControlError, urllib.error.URLError, OSError, ValueError) as exc:
            out[name] = {"error": repr(exc)[:300]}

    def cold(evict: bool) -> float:
        act("unload")
        if files:
            (evict_page_cache if evict else warm_page_cache)(files)
        return _timed(lambda: act("ensure"))

    if files:
        figure("cold_start_evicted_s", lambda: cold(True))
    figure("cold_start_warm_s", lambda: cold(False))
    out["page_cache_controlled"] = bool(files)

    def wake() -> float:
        act("ensure")
        act("sleep")
        return _timed(lambda: act("wake"))

    figure("wake_from_sleep_s", wake)

    if gateway_url:

        def first_request() -> float:
            act("unload")
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            }
            url = gateway_url.rstrip("/") + "/v1/chat/completions"
            return _timed(lambda: _post(url, body))

        figure("on_demand_first_request_s", first_request)
    try:  # leave the model loaded
        act("ensure")
    except ControlError:
        pass
    return out
