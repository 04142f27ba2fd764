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

from orchestra.audit.lines import BATCH_ROW
from orchestra.config import ApiKey

from ..core.call import REPLICA, SERVED_BY, new_call
from ..core.errors import GatewayError
from ..core.traits import PLAIN, Traits
from ..metrics import UNKNOWN_MODEL
from ..upstream.backend import BACKEND_HEADER

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
        self._charge_keys = charge_keys  # rows are charged to the key that submitted the batch

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
            api_key=self._owner(owner),
            priority=self._priority,
            traits=self._endpoints.get(path, PLAIN),  # PLAIN: a stored batch's old endpoint
        )
        started = time.perf_counter()
        label = model if gw.table.get(model) is not None else UNKNOWN_MODEL
        tab = gw.usage.tab(call, label)  # the submitting key's ledger and budget
        status = 500
        headers: Mapping[str, str] = {}
        with gw.tracing.span("batch row") as span:  # a child of the batch's (runner.py)
            span.set_attribute("orchestra.request_id", request_id)
            span.set_attribute("gen_ai.request.model", model)
            try:
                await tab.admit()  # a spent budget: 429 budget_exceeded, in the error file
                reply = await gw.pipeline.serve(call)
                headers = reply.headers
                status, body = reply.status, await reply.read()
            except GatewayError as exc:
                status, body = exc.status, exc.body()
            finally:
                tab.close(status)
                span.set_attribute("http.response.status_code", status)
        # Counted like an HTTP answer (the edge sees no ASGI call here), and audited.
        gw.metrics.model(label).answered(status, started)
        if gw.audit is not None:  # in audit.lines.FIELDS' order
            values = (
                request_id,
                None,  # no trace id
                tab.key if call.api_key is not None else None,
                path,
                model,
                headers.get(SERVED_BY),
                headers.get(REPLICA),
                headers.get(BACKEND_HEADER),
                status,
                body,  # an error's body: its code
                tab.prompt if tab.served else None,
                tab.completion if tab.served else None,
                (time.perf_counter() - started) * 1000,
                call.marks.attempts,
                call.marks.fallback,
            )
            raw = call.body if isinstance(call.body, bytes) else None
            gw.audit.emit(BATCH_ROW, values, raw, body)
        return status, body

    def _owner(self, owner: str | None) -> ApiKey | None:
        """The key that submitted the batch (the config's or one made at run time)."""
        if not self._charge_keys or owner is None:
            return None
        return self._gw.keys.by_name(owner)
