"""LoRA adapters on a model's engines: loading and unloading them at run time.

A server with `adapters:` (or `max_loras:`) is started with LoRA on (`lora.py`: the launch
flags) and with runtime updating allowed, so
`POST /models/{name}/adapters` ({name, path}) and `DELETE /models/{name}/adapters/{adapter}`
load and unload one on every READY engine of the model through vLLM's
`/v1/load_lora_adapter` and `/v1/unload_lora_adapter`. The model's info lists its adapters
(config and runtime), which is how the gateway learns where to route them.

Runtime adapters live in the supervisor's memory: an engine that restarts comes back with the
configured ones only (they are in its argv), so a runtime adapter is loaded again on engines
that miss it the next time it is loaded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from orchestra.errors import ErrorKind

from .errors import BadRequest, EngineError, SupervisorError
from .lora import lora_enabled
from .model import Model

ADAPTER_CALL_TIMEOUT_S = 120.0  # loading reads the adapter's weights from disk


class AdapterError(SupervisorError, kind=ErrorKind(502, "adapter_error", "adapter_failed")):
    pass


class LoraDisabled(BadRequest):
    code = "lora_disabled"


def adapter_names(model: Model) -> list[str]:
    return [*(a.name for a in model.server.adapters), *model.runtime_adapters]


class Adapters:
    """Loads and unloads runtime adapters (kept in `Model.runtime_adapters`, name -> path)
    on the model's READY engines."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def load(self, model: Model, name: str, path: str) -> None:
        if not lora_enabled(model.server):
            raise LoraDisabled(
                f"model `{model.name}` was not started with LoRA: give it `adapters:` or "
                "`max_loras:` in the config"
            )
        body = {"lora_name": name, "lora_path": path}
        await self._each_engine(model, "/v1/load_lora_adapter", body)
        model.runtime_adapters[name] = path

    async def unload(self, model: Model, name: str) -> None:
        await self._each_engine(model, "/v1/unload_lora_adapter", {"lora_name": name})
        model.runtime_adapters.pop(name, None)

    async def _each_engine(self, model: Model, path: str, body: dict[str, Any]) -> None:
        engines = model.ready()
        if not engines:
            raise EngineError(f"model `{model.name}` has no READY engine to load adapters on")
        results = await asyncio.gather(
            *(self._post(e.url + path, body, e.spec.api_key) for e in engines)
        )
        failed = [r for r in results if r]
        if failed:
            raise AdapterError("; ".join(failed))

    async def _post(self, url: str, body: dict[str, Any], api_key: str | None = None) -> str:
        """'' on success, else what went wrong. `api_key`: the engine's --api-key (/v1 needs it)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        try:
            async with self._session.post(
                url, json=body, headers=headers, timeout=self._timeout
            ) as resp:
                if resp.status == 200:
                    return ""
                text = await resp.text()
                return f"{url}: HTTP {resp.status}: {text[:300]}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{url}: {exc!r}"
