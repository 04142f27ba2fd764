"""The one client of the supervisor's control API, shared by the gateway, the CLI and `up`.

It always sends the admin token when one is configured (`supervisor.admin_token`, or
`ORCHESTRA_ADMIN_TOKEN` for the CLI). Async (aiohttp); synchronous callers (the CLI, `up`) use
`call_sync`, which runs one call on a short-lived session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ValidationError

from orchestra.config import OrchestraConfig
from orchestra.protocol import (
    AdapterSpec,
    AdaptersReply,
    GatewayReport,
    Health,
    LogsReply,
    ModelInfo,
    ModelStatus,
    ModelTable,
    NodeLoad,
    SyncReply,
    parse_error,
)
from orchestra.trace_context import with_current

# The wire types the gateway imports from here (they live in orchestra.protocol).
__all__ = [
    "ACTIONS",
    "ControlClient",
    "ControlError",
    "GatewayReport",
    "ModelStatus",
    "NodeLoad",
    "SyncReply",
    "call_sync",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
ACTIONS = ("load", "unload", "sleep", "wake", "restart", "ensure")


class ControlError(Exception):
    """The supervisor refused or failed; `status` is its HTTP status (0 = unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlClient:
    def __init__(
        self,
        base_url: str,
        token: str | None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s)

    @classmethod
    def from_config(
        cls,
        config: OrchestraConfig,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        *,
        url: str | None = None,
        token: str | None = None,
    ) -> ControlClient:
        return cls(
            url or config.supervisor_url,
            token or config.supervisor.admin_token,
            session,
            timeout_s,
        )

    async def __aenter__(self) -> ControlClient:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        path: str,
        reply: type[M],
        *,
        json: object = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> M:
        """One call; its reply parsed as `reply` (ControlError if it is not one)."""
        if self._session is None:
            raise RuntimeError("ControlClient used outside `async with` and without a session")
        timeout = (
            self._timeout
            if timeout_s is None
            else aiohttp.ClientTimeout(total=timeout_s, sock_connect=self._timeout.sock_connect)
        )
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                json=json,
                params=params,
                # A command waited on for a traced request (an ensure) joins its trace: the
                # supervisor's swap spans link to it.
                headers=with_current(self._headers),
                timeout=timeout,
            ) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise ControlError(resp.status, _error_message(body, resp.status))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ControlError(0, f"supervisor unreachable at {self.base_url}: {exc!r}") from exc
        try:
            return reply.model_validate_json(body)
        except ValidationError as exc:
            what = f"{method} {path}"
            raise ControlError(0, f"supervisor sent an unexpected reply to {what}: {exc}") from None

    # ---- reads ----------------------------------------------------------------------------------
    async def health(self) -> bool:
        try:
            payload = await self._call("GET", "/health", Health)
        except ControlError:
            return False
        return payload.status == "ok"

    async def models(self) -> list[ModelInfo]:
        """The full model table (engines, page cache, errors)."""
        return (await self._call("GET", "/models", ModelTable)).models

    async def info(self, model: str) -> ModelInfo:
        """One model's entry of the table."""
        return await self._call("GET", f"/models/{_name(model)}", ModelInfo)

    async def table(self) -> list[dict[str, Any]]:
        """The model table as JSON objects: what the views (`orchestra.cli.status_view`, the
        console) render, beside rows of their own."""
        return [m.model_dump(mode="json") for m in await self.models()]

    async def logs(self, model: str, lines: int, replica: int = 0) -> list[str]:
        params = {"lines": str(lines), "replica": str(replica)}
        return (
            await self._call("GET", f"/models/{_name(model)}/logs", LogsReply, params=params)
        ).lines

    async def follow(
        self, model: str, since: int | None, lines: int = 100, replica: int = 0
    ) -> tuple[list[str], int]:
        """`logs -f`: the last `lines` lines (`since` None) or the lines written after byte
        `since`; and the offset to ask from next time."""
        params = {"lines": str(lines), "replica": str(replica)}
        if since is not None:
            params["since"] = str(since)
        reply = await self._call("GET", f"/models/{_name(model)}/logs", LogsReply, params=params)
        return reply.lines, reply.offset

    # ---- the gateway's calls --------------------------------------------------------------------
    async def sync(self, gateway_id: str, report: GatewayReport) -> SyncReply:
        """Report demand and in-flight counts; get the model table (and the node's load) back."""
        path = f"/gateways/{_name(gateway_id)}/sync"
        return await self._call("POST", path, SyncReply, json=report.model_dump())

    async def ensure(self, model: str, timeout_s: float) -> ModelStatus:
        """Blocks until the supervisor reports `model` READY (or refuses, or times out)."""
        return await self.command(model, "ensure", timeout_s)

    # ---- commands -------------------------------------------------------------------------------
    async def begin_shutdown(self) -> None:
        """Tell the supervisor it is about to be stopped: commands waiting on it (and new ones
        that would wait) answer 503 at once; its engines keep serving."""
        await self._call("POST", "/shutdown/begin", Health)

    async def command(self, model: str, action: str, timeout_s: float) -> ModelInfo:
        """load / unload / sleep / wake / restart / ensure; the model's table entry after it."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        params = {"timeout_s": str(timeout_s)} if action != "unload" else None
        return await self._call(
            "POST",
            f"/models/{_name(model)}/{action}",
            ModelInfo,
            params=params,
            timeout_s=timeout_s + 5,  # the supervisor answers 504 at timeout_s; allow for it
        )

    async def action(self, model: str, action: str, timeout_s: float) -> dict[str, Any]:
        """`command`, its reply as a JSON object (what the views render)."""
        return (await self.command(model, action, timeout_s)).model_dump(mode="json")

    async def load_adapter(
        self, model: str, adapter: str, path: str, timeout_s: float
    ) -> list[str]:
        """Load a LoRA adapter on every READY engine of `model`; the adapters it serves then."""
        body = AdapterSpec(name=adapter, path=path).model_dump()
        route = f"/models/{_name(model)}/adapters"
        reply = await self._call("POST", route, AdaptersReply, json=body, timeout_s=timeout_s)
        return reply.adapters

    async def unload_adapter(self, model: str, adapter: str, timeout_s: float) -> list[str]:
        route = f"/models/{_name(model)}/adapters/{quote(adapter, safe='')}"
        return (await self._call("DELETE", route, AdaptersReply, timeout_s=timeout_s)).adapters


def call_sync(client: ControlClient, call: Callable[[ControlClient], Awaitable[T]]) -> T:
    """Run one call from synchronous code (CLI, `up`) on a session of its own."""

    async def run() -> T:
        async with client:
            return await call(client)

    return asyncio.run(run())


def _name(model: str) -> str:
    return quote(model, safe="/")


def _error_message(body: bytes, status: int) -> str:
    error = parse_error(body)
    if error is None:
        return f"supervisor answered HTTP {status}"
    return error.message or str(status)
