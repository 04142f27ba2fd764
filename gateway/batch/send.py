"""The one seam between batches and the gateway: a row enters the pipeline like any call.

`InProcessSender(gw)` is a callable `send(path, body, model, request_id, owner) -> (status,
body)`: names (aliases, fallback chains, adapters), the rate limits of the key that submitted
the batch (`owner`; unless `batch.charge_keys` is off), routing (a cold model is ensured, once
for all rows waiting on it), admission at the batch priority, balancing, the proxy's retries
and the Ollama fallback, exactly as an HTTP request would get them, without the HTTP hop. The
answer, a plain `core.reply.Reply`, is read here directly (`Reply.read`: the whole body, then
closed), and counted by the one writer of the answer counters (`ModelMetrics.answered`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import orjson

from orchestra.config import ApiKey

from ..core.call import new_call
from ..core.errors import GatewayError
from ..core.traits import PLAIN, Traits
from ..metrics import UNKNOWN_MODEL

if TYPE_CHECKING:
    from ..container import Gateway


class Send(Protocol):
    async def __call__(
        self, path: str, body: bytes, model: str, request_id: str, owner: str | None
    ) -> tuple[int, bytes]: ...


class InProcessSender:
    def __init__(
        self, gw: Gateway, priority: int, charge_keys: bool, endpoints: Mapping[str, Traits]
    ) -> None:
        self._gw = gw
        self._endpoints = endpoints  # path -> the traits its rows' calls carry
        self._priority = str(priority)
        # key name -> key: rows are charged to the key that submitted their batch
        self._keys: dict[str, ApiKey] = (
            {key.name: key for key in gw.config.gateway.api_keys} if charge_keys else {}
        )

    async def __call__(
        self, path: str, body: bytes, model: str, request_id: str, owner: str | None
    ) -> tuple[int, bytes]:
        gw = self._gw
        call = new_call(
            path,
            body,
            orjson.loads(body),
            model,
            request_id=request_id,
            stream=False,
            api_key=self._keys.get(owner) if owner else None,
            priority=self._priority,
            traits=self._endpoints.get(path, PLAIN),  # PLAIN: a stored batch's old endpoint
        )
        started = time.perf_counter()
        try:
            reply = await gw.pipeline.serve(call)
            status, body = reply.status, await reply.read()
        except GatewayError as exc:
            status, body = exc.status, exc.body()
        # Counted like an HTTP answer (the edge sees no ASGI call here).
        known = model if gw.table.get(model) is not None else UNKNOWN_MODEL
        gw.metrics.model(known).answered(status, started)
        return status, body
