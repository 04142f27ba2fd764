"""The console's calls to the supervisor's control API: the full model table and the actions.

(The gateway's routing client reads only names, states and upstreams; the console needs the
whole table: engines, GPUs, uptime, restarts, page cache, last errors.) To be folded into the
shared control client with the rest of the control-API calls.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

ACTIONS = frozenset({"load", "unload", "sleep", "wake", "restart"})


class SupervisorUnavailable(Exception):
    """The supervisor refused or could not be reached; `status` is its HTTP status (0: none)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConsoleSupervisor:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        token: str | None,
        table_timeout_s: float,
        action_timeout_s: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._table_timeout = aiohttp.ClientTimeout(total=table_timeout_s)
        self._action_timeout = aiohttp.ClientTimeout(
            total=action_timeout_s, sock_connect=table_timeout_s
        )

    async def _call(self, method: str, path: str, limits: aiohttp.ClientTimeout) -> Any:
        try:
            async with self._session.request(
                method, self.base_url + path, headers=self._headers, timeout=limits
            ) as resp:
                payload = await resp.json(content_type=None)
                if resp.status >= 400:
                    error = payload.get("error") if isinstance(payload, dict) else None
                    message = error.get("message") if isinstance(error, dict) else None
                    raise SupervisorUnavailable(resp.status, str(message or f"HTTP {resp.status}"))
                return payload
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SupervisorUnavailable(0, f"supervisor unreachable: {exc!r}") from exc

    async def table(self) -> list[dict[str, Any]]:
        payload = await self._call("GET", "/models", self._table_timeout)
        models = payload.get("models") if isinstance(payload, dict) else None
        if not isinstance(models, list):
            raise SupervisorUnavailable(0, "supervisor sent an unexpected model table")
        return [m for m in models if isinstance(m, dict)]

    async def action(self, model: str, action: str) -> dict[str, Any]:
        """POST /models/{model}/{action}: blocks until the supervisor has done it."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        path = f"/models/{quote(model, safe='/')}/{action}"
        payload = await self._call("POST", path, self._action_timeout)
        return payload if isinstance(payload, dict) else {}
