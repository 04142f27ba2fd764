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
from pydantic import BaseModel, ConfigDict, ValidationError

from orchestra.config import OrchestraConfig

T = TypeVar("T")
ACTIONS = ("load", "unload", "sleep", "wake", "restart", "ensure")


class ModelStatus(BaseModel):
    """The part of one model-table entry the gateway routes by."""

    model_config = ConfigDict(extra="ignore")

    name: str
    state: str
    upstreams: list[str] = []  # READY engines that take new requests
    draining: list[str] = []  # engines being evicted: no new requests, in-flight ones finish
    adapters: list[str] = []  # LoRA adapters its engines serve (config and runtime)
    api_key: str | None = None  # the engines' --api-key (engines off loopback); send as Bearer


class NodeLoad(BaseModel):
    """How full a node is, from its supervisor's sync reply (where to place a cold model)."""

    model_config = ConfigDict(extra="ignore")

    resident: int = 0  # engines holding GPUs or a resident slot (or about to)
    gpus: int = 0  # GPUs the supervisor manages (0 = CPU host)
    free_gpus: int = 0
    free_slots: int | None = None  # supervisor.max_resident minus resident; None = no bound

    @property
    def has_room(self) -> bool:
        """One more engine fits without evicting anything (a 1-GPU engine on a GPU node)."""
        slots_ok = self.free_slots is None or self.free_slots > 0
        return slots_ok and (self.gpus == 0 or self.free_gpus > 0)


class SyncReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    models: list[ModelStatus] = []
    node: NodeLoad = NodeLoad()


class GatewayReport(BaseModel):
    """What a gateway tells the supervisor on each sync.

    `inflight` counts this gateway's requests per engine URL. `draining_seen` lists the engine
    URLs it has taken out of rotation (it learned they are draining): for those, `inflight` is
    final — it can only go down — so the supervisor may stop the engine once it reads 0.
    """

    demand: dict[str, int] = {}
    inflight: dict[str, int] = {}
    draining_seen: list[str] = []


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
        *,
        json: object = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
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
                headers=self._headers,
                timeout=timeout,
            ) as resp:
                payload = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise ControlError(resp.status, _error_message(payload, resp.status))
                return payload
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ControlError(0, f"supervisor unreachable at {self.base_url}: {exc!r}") from exc

    # ---- reads ----------------------------------------------------------------------------------
    async def health(self) -> bool:
        try:
            payload = await self._call("GET", "/health")
        except ControlError:
            return False
        return isinstance(payload, dict) and payload.get("status") == "ok"

    async def table(self) -> list[dict[str, Any]]:
        """The full model table (engines, page cache, errors): what the CLI shows."""
        payload = await self._call("GET", "/models")
        models = payload.get("models") if isinstance(payload, dict) else None
        if not isinstance(models, list):
            raise ControlError(0, "supervisor sent an unexpected model table")
        return models

    async def logs(self, model: str, lines: int, replica: int = 0) -> list[str]:
        params = {"lines": str(lines), "replica": str(replica)}
        payload = await self._call("GET", f"/models/{_name(model)}/logs", params=params)
        return list(payload.get("lines", [])) if isinstance(payload, dict) else []

    async def follow(
        self, model: str, since: int | None, lines: int = 100, replica: int = 0
    ) -> tuple[list[str], int]:
        """`logs -f`: the last `lines` lines (`since` None) or the lines written after byte
        `since`; and the offset to ask from next time."""
        params = {"lines": str(lines), "replica": str(replica)}
        if since is not None:
            params["since"] = str(since)
        payload = await self._call("GET", f"/models/{_name(model)}/logs", params=params)
        if not isinstance(payload, dict):
            raise ControlError(0, "supervisor sent an unexpected log reply")
        return list(payload.get("lines", [])), int(payload.get("offset") or 0)

    # ---- the gateway's calls --------------------------------------------------------------------
    async def sync(self, gateway_id: str, report: GatewayReport) -> SyncReply:
        """Report demand and in-flight counts; get the model table (and the node's load) back."""
        payload = await self._call(
            "POST", f"/gateways/{_name(gateway_id)}/sync", json=report.model_dump()
        )
        try:
            return SyncReply.model_validate(payload)
        except ValidationError as exc:
            raise ControlError(0, f"supervisor sent an unexpected model table: {exc}") from exc

    async def ensure(self, model: str, timeout_s: float) -> ModelStatus:
        """Blocks until the supervisor reports `model` READY (or refuses, or times out)."""
        payload = await self.action(model, "ensure", timeout_s)
        try:
            return ModelStatus.model_validate(payload)
        except ValidationError as exc:
            raise ControlError(0, f"supervisor sent an unexpected ensure reply: {exc}") from exc

    # ---- commands -------------------------------------------------------------------------------
    async def action(self, model: str, action: str, timeout_s: float) -> dict[str, Any]:
        """load / unload / sleep / wake / restart / ensure; the model's table entry after it."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        params = {"timeout_s": str(timeout_s)} if action != "unload" else None
        payload = await self._call(
            "POST",
            f"/models/{_name(model)}/{action}",
            params=params,
            timeout_s=timeout_s + 5,  # the supervisor answers 504 at timeout_s; allow for it
        )
        if not isinstance(payload, dict):
            raise ControlError(0, f"supervisor sent an unexpected {action} reply")
        return payload


def call_sync(client: ControlClient, call: Callable[[ControlClient], Awaitable[T]]) -> T:
    """Run one call from synchronous code (CLI, `up`) on a session of its own."""

    async def run() -> T:
        async with client:
            return await call(client)

    return asyncio.run(run())


def _name(model: str) -> str:
    return quote(model, safe="/")


def _error_message(payload: object, status: int) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message", status))
    return f"supervisor answered HTTP {status}"
