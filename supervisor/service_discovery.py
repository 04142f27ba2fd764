"""Prometheus HTTP service discovery for engines: `GET /sd/engines`.

Prometheus (`http_sd_configs`) polls this and scrapes every engine that is up (READY or
SLEEPING) on its own `/metrics`, labelled `model` and `engine`, so nobody hand-edits ports.
Wire it into the control app with `app.include_router(sd_router(model_table))`, where
`model_table()` returns (or awaits to) the same entries as `GET /models`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import JSONResponse

SCRAPED_STATES = frozenset({"ready", "sleeping"})

ModelTable = Callable[[], Iterable[Mapping[str, Any]] | Awaitable[Iterable[Mapping[str, Any]]]]


def _host_port(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


def engine_targets(model_table_entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Model table entries (`GET /models` items) -> Prometheus HTTP SD target groups.

    Entries with `engines` ([{id, state, url}]) give one group per live engine; entries with
    only `upstreams` (READY URLs) give one group per URL, the engine named after its address.
    """
    groups: list[dict[str, Any]] = []
    for entry in model_table_entries:
        model = str(entry.get("name", ""))
        engines = entry.get("engines")
        if engines is None:
            engines = [
                {"id": None, "state": "ready", "url": url} for url in entry.get("upstreams") or []
            ]
        for engine in engines:
            if str(engine.get("state", "")).lower() not in SCRAPED_STATES:
                continue
            target = _host_port(str(engine.get("url") or ""))
            if target is None:
                continue
            groups.append(
                {
                    "targets": [target],
                    "labels": {"model": model, "engine": str(engine.get("id") or target)},
                }
            )
    return groups


def sd_router(model_table: ModelTable) -> APIRouter:
    """`GET /sd/engines` over `model_table` (sync or async callable)."""
    router = APIRouter()

    @router.get("/sd/engines")
    async def sd_engines() -> JSONResponse:
        entries = model_table()
        if inspect.isawaitable(entries):
            entries = await entries
        return JSONResponse(engine_targets(entries))

    return router
