"""What the console shows, gathered once per tick for every open page: the model table (the
supervisor's, plus the gateway's unmanaged routes), swaps in progress, per-model rates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from orchestra.cli.status_view import TRANSITIONAL, model_row
from orchestra.control import ControlClient, ControlError
from orchestra.rates import RateWindow, from_registry

from ..core import sse
from .render import model_rows_html, swaps_html

if TYPE_CHECKING:
    from ..container import Gateway


class ConsoleState:
    """Per gateway app (made on the first console request, after the lifespan built `gw`)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        cfg = gw.config.gateway.console
        self.refresh_s = cfg.refresh_s
        self.window = RateWindow(cfg.rate_window_s)
        # the gateway's control client (sends the admin token); None without a supervisor
        self.supervisor: ControlClient | None = gw.link.client if gw.link is not None else None
        self.action_timeout_s = gw.config.supervisor.ensure_timeout_s
        self.pending: dict[str, tuple[str, float]] = {}  # model -> (action, started), from here
        self._transitional_since: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._last: tuple[float, dict[str, Any]] | None = None
        self.last_models: list[dict[str, Any]] = []  # the full dicts behind the last snapshot

    async def models(self) -> tuple[list[dict[str, Any]], str]:
        """Every configured model as a supervisor-style dict, and a notice ("" when all is well)."""
        managed: dict[str, dict[str, Any]] = {}
        notice = ""
        if self.supervisor is not None:
            try:
                managed = {str(m.get("name")): m for m in await self.supervisor.table()}
            except ControlError as exc:
                notice = f"model table unavailable: {exc.message}"
        out = []
        for route in self.gw.table.routes.values():
            found = managed.get(route.name)
            out.append(
                found
                if found is not None
                else {
                    "name": route.name,
                    "managed": route.managed,
                    "state": route.state,
                    "upstreams": [r.url for r in route.replicas],
                    "engines": [],
                }
            )
        return out, notice

    def _swaps(self, models: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        swaps = []
        for m in models:
            name = str(m["name"])
            row = model_row(m)
            engine_states = {e.get("state") for e in m.get("engines") or []}
            moving = row.state in TRANSITIONAL or bool(engine_states & TRANSITIONAL)
            if moving:
                self._transitional_since.setdefault(name, now)
            else:
                self._transitional_since.pop(name, None)
            action = self.pending.get(name)
            if not moving and action is None:
                continue
            since = min(self._transitional_since.get(name, now), action[1] if action else now)
            swaps.append(
                {
                    "model": name,
                    "state": row.state,
                    "action": action[0] if action else None,
                    "elapsed_s": round(now - since, 1),
                    "expected_s": row.last_startup_s,
                }
            )
        return swaps

    async def snapshot(self) -> dict[str, Any]:
        """The feed's payload; pages opened together share one read per half tick."""
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.refresh_s / 2:
                return self._last[1]
            models, notice = await self.models()
            self.window.add(from_registry(self.gw.metrics.registry))
            rates = {name: r.as_dict() for name, r in self.window.rates().items()}
            swaps = self._swaps(models, now)
            self.last_models = models
            payload = {
                "models": [
                    {"name": m["name"], "state": m.get("state"), "hot": bool(m.get("hot"))}
                    for m in models
                ],
                "rates": rates,
                "swaps": swaps,
                "notice": notice,
                "html": {"models": model_rows_html(models, rates), "swaps": swaps_html(swaps)},
            }
            self._last = (now, payload)
            return payload

    def invalidate(self) -> None:
        self._last = None

    async def events(self, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[bytes]:
        """SSE: an `update` event every tick until the page goes away."""
        yield sse.retry(2000)
        while not await disconnected():
            payload = await self.snapshot()
            yield sse.json_frame(payload, "update")
            await asyncio.sleep(self.refresh_s)
