"""Swap figures through the supervisor's control API: cold start with the page cache evicted
vs warm, wake from sleep, and the first request to an unloaded model through the gateway."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def _call(method: str, url: str, payload: Any = None, timeout: float = 900.0) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def _timed(method: str, url: str, payload: Any = None) -> float:
    t0 = time.perf_counter()
    _call(method, url, payload)
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
    supervisor_url: str, model: str, gateway_url: str | None, model_path: str | None
) -> dict[str, Any]:
    """Each figure in seconds, or {"error": ...} when the server refuses it."""
    sup = supervisor_url.rstrip("/") + f"/models/{model}"
    out: dict[str, Any] = {"model": model}
    files = _weight_files(model_path)

    def figure(name: str, fn: Any) -> None:
        try:
            out[name] = fn()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            out[name] = {"error": repr(exc)[:300]}

    def cold(evict: bool) -> float:
        _call("POST", sup + "/unload")
        if files:
            (evict_page_cache if evict else warm_page_cache)(files)
        return _timed("POST", sup + "/ensure")

    if files:
        figure("cold_start_evicted_s", lambda: cold(True))
    figure("cold_start_warm_s", lambda: cold(False))
    out["page_cache_controlled"] = bool(files)

    def wake() -> float:
        _call("POST", sup + "/ensure")
        _call("POST", sup + "/sleep")
        return _timed("POST", sup + "/wake")

    figure("wake_from_sleep_s", wake)

    if gateway_url:

        def first_request() -> float:
            _call("POST", sup + "/unload")
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            }
            return _timed("POST", gateway_url.rstrip("/") + "/v1/chat/completions", body)

        figure("on_demand_first_request_s", first_request)
    try:  # leave the model loaded
        _call("POST", sup + "/ensure")
    except (urllib.error.URLError, OSError):
        pass
    return out
