"""The one seam between batches and the gateway: send a row through the normal request path.

`InProcessSender(gw)` is a callable `send(path, body, model, request_id) -> (status, body)`:
routing (a cold model is ensured, once for all rows waiting on it), admission at the batch
priority, balancing, retries and the Ollama fallback, exactly as an HTTP request would get
them, but without the HTTP hop. Everything it needs from the gateway is in this file, so a
reshaped `app.py` / `dispatch.py` means re-pointing these few lines.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

import orjson

from ..edge.errors import GatewayError
from ..metrics import UNKNOWN_MODEL
from ..pipeline.call import Call

if TYPE_CHECKING:
    from ..container import Gateway


class Send(Protocol):
    async def __call__(
        self, path: str, body: bytes, model: str, request_id: str
    ) -> tuple[int, bytes]: ...


class InProcessSender:
    def __init__(self, gw: Gateway, priority: int) -> None:
        self._gw = gw
        self._priority = str(priority)

    async def __call__(
        self, path: str, body: bytes, model: str, request_id: str
    ) -> tuple[int, bytes]:
        gw = self._gw
        call = Call(
            path=path,
            body=body,
            model=model,
            stream=False,
            headers={"content-type": "application/json", "x-request-id": request_id},
            reply_headers={},
        )
        started = time.perf_counter()
        try:
            response = await gw.dispatcher.dispatch(call, orjson.loads(body), self._priority)
        except GatewayError as exc:
            status, reply = exc.status, exc.body()
        else:
            iterator = getattr(response, "body_iterator", None)
            if iterator is None:
                status, reply = response.status_code, bytes(response.body)
            else:
                chunks = [c if isinstance(c, bytes) else str(c).encode() async for c in iterator]
                status, reply = response.status_code, b"".join(chunks)
        # Counted like an HTTP answer (`middleware.ResponseCounter` sees no ASGI call here).
        bound = gw.metrics.model(model if gw.table.get(model) is not None else UNKNOWN_MODEL)
        bound.requests(status).inc()
        bound.request_seconds.observe(time.perf_counter() - started)
        return status, reply
