"""The gateway's one typed client for the supervisor's control API.

The gateway never imports supervisor code: it learns the model table (states and READY upstream
URLs), asks for `ensure` when a request names a cold model, and reports demand for rotation.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError


class ModelStatus(BaseModel):
    """The part of the supervisor's model table the gateway uses."""

    model_config = ConfigDict(extra="ignore")

    name: str
    state: str
    upstreams: list[str] = []
    adapters: list[str] = []  # LoRA adapters its engines serve (config and runtime)


class ControlError(Exception):
    """The supervisor refused or failed; `status` is its HTTP status (0 = unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SupervisorClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: Mapping[str, str] | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> object:
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                json=json,
                params=params,
                timeout=client_timeout or self._timeout,
            ) as resp:
                payload = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise ControlError(resp.status, _error_message(payload, resp.status))
                return payload
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ControlError(0, f"supervisor unreachable at {self.base_url}: {exc!r}") from exc

    async def list_models(self) -> list[ModelStatus]:
        payload = await self._call("GET", "/models")
        try:
            models = payload["models"] if isinstance(payload, dict) else None
            return [ModelStatus.model_validate(item) for item in models or []]
        except (ValidationError, TypeError) as exc:
            raise ControlError(0, f"supervisor sent an unexpected model table: {exc}") from exc

    async def ensure(self, model: str, timeout_s: float) -> ModelStatus:
        """Blocks until the supervisor reports `model` READY (or refuses, or times out)."""
        timeout = aiohttp.ClientTimeout(
            total=timeout_s + 5, sock_connect=self._timeout.sock_connect
        )
        payload = await self._call(
            "POST",
            f"/models/{model}/ensure",
            params={"timeout_s": str(timeout_s)},
            client_timeout=timeout,
        )
        try:
            return ModelStatus.model_validate(payload)
        except ValidationError as exc:
            raise ControlError(0, f"supervisor sent an unexpected ensure reply: {exc}") from exc

    async def report_demand(self, counts: Mapping[str, int], inflight: Mapping[str, int]) -> None:
        await self._call(
            "POST", "/demand", json={"counts": dict(counts), "inflight": dict(inflight)}
        )


def _error_message(payload: object, status: int) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message", status))
    return f"supervisor answered HTTP {status}"
