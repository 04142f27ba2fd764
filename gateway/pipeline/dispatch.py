"""One proxied request, end to end: read and shape it, route, admit, forward, fall back.

`Dispatcher.handle` takes the raw POST (body limit, JSON, `model`, headers to send upstream,
rate-limit charge), then `dispatch`: route (a cold managed model is ensured first), admission,
the vLLM replicas through the proxy, and the Ollama fallback.

The fallback is taken only for models that `fallback.ollama.models` maps, while Ollama is
healthy, and only where no vLLM replica could serve: the model is unavailable (down, FAILED, no
supervisor), its swap timed out, it is overloaded beyond its queue, or every replica answered
502/503/504 or failed before the first byte. Otherwise the original error stands.

Nothing here counts answers: `middleware.ResponseCounter` does, once, with the status the client
got. Dispatch only names the model label (`scope["state"]["model"]`) once it is known.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from orchestra.config import GatewayConfig

from ..balancing.key import RequestKey
from ..cluster.routing import Router, RoutingTable
from ..edge.errors import (
    BadRequest,
    GatewayError,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
    UpstreamTimeout,
)
from ..protection.admission import Admission, release_when_done
from ..protection.ratelimit import RateLimiter
from ..upstream.ollama_client import OllamaClient
from ..upstream.proxy import Proxy
from .call import Call
from .loading import LoadingComments

_FALLBACK_STATUS = {502: "upstream_error", 503: "unavailable", 504: "timeout"}


class Dispatcher:
    def __init__(
        self,
        config: GatewayConfig,
        table: RoutingTable,
        router: Router,
        admission: Admission,
        proxy: Proxy,
        limiter: RateLimiter,
        fallback: OllamaClient | None,
    ) -> None:
        self._config = config
        self._table = table
        self._router = router
        self._admission = admission
        self._proxy = proxy
        self._limiter = limiter
        self._fallback = fallback
        # What a shaped request goes to: `dispatch`, or the workloads in front of it (aliases,
        # chains, ensembles: gateway/workloads.py), set by the container.
        self.serve: Callable[[Call, dict[str, Any], str | None], Awaitable[Response]]
        self.serve = self.dispatch
        self.loading: LoadingComments | None = None  # SSE comments while a model loads

    # ---- request shaping ------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        """A POST to a proxied OpenAI path, as received."""
        arrived = time.perf_counter()
        payload, body = await _read_json_object(request, self._config.max_body_bytes)
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a `model` (a string)", param="model")
        state = request.scope["state"]  # filled by RequestIdMiddleware and AuthMiddleware
        if self._table.get(model) is not None:
            state["model"] = model  # the metrics label: a configured name, never a client string
        request_id: str = state["request_id"]
        headers = {"content-type": "application/json", "x-request-id": request_id}
        auth = request.headers.get("authorization")
        if auth and not self._config.api_keys:
            headers["authorization"] = auth  # no gateway keys: the upstream may want its own
        key = state.get("api_key")
        limits = await self._limiter.admit_async(key, payload, len(body)) if key else {}
        call = Call(
            path=request.scope["path"],
            body=body,
            model=model,
            stream=payload.get("stream") is True,
            headers=headers,
            reply_headers=limits,
            on_usage=(
                functools.partial(self._limiter.settle, key, payload, len(body)) if key else None
            ),
            route_key=RequestKey(payload, request.scope["headers"]),
            arrived=arrived,
        )
        priority = request.headers.get(self._admission.priority_header)
        if self.loading is not None and self.loading.wants(model, call.stream):
            work = functools.partial(self.serve, call, payload, priority)  # gateway/loading.py
            return self.loading.stream(model, work, call.reply_headers)
        return await self.serve(call, payload, priority)

    # ---- routing, admission, proxy, fallback ----------------------------------------------------
    async def dispatch(
        self,
        call: Call,
        payload: dict[str, Any],
        priority: str | None,
        ollama: bool = True,  # False: a fallback chain (gateway/chains.py) decides on Ollama
    ) -> Response:
        fallback = self._fallback if self._fallback and self._fallback.covers(call.model) else None
        fallback = fallback if ollama else None
        try:
            route = await self._router.route(call.model)
        except (Unavailable, UpstreamTimeout) as exc:
            if not ollama:
                raise
            reason = "timeout" if isinstance(exc, UpstreamTimeout) else "unavailable"
            return await self._fall_back(call, payload, reason, exc)
        gate = self._admission.gate(call.model)
        if gate is not None:
            try:
                await gate.acquire(self._admission.priority(priority))
            except Overloaded as exc:
                if fallback is None:
                    raise
                return await self._fall_back(call, payload, "overloaded", exc)
        try:
            response = await self._proxy.forward(call, route)
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        why = _FALLBACK_STATUS.get(response.status_code)
        if fallback is not None and why and not isinstance(response, StreamingResponse):
            if gate is not None:
                gate.release()
            return await self._fall_back(call, payload, why, response)
        return response if gate is None else release_when_done(response, gate)

    async def _fall_back(
        self,
        call: Call,
        payload: dict[str, Any],
        reason: str,
        original: GatewayError | Response,
    ) -> Response:
        """Serve from Ollama, else the original answer (returned, or raised if an error)."""
        fallback = self._fallback
        if fallback is not None and fallback.covers(call.model) and fallback.healthy:
            served = await fallback.forward(call, payload, reason)
            if served is not None:
                return served
        if isinstance(original, Response):
            return original
        original.headers.update(call.reply_headers)
        raise original


async def _read_json_object(request: Request, limit: int) -> tuple[dict[str, Any], bytes]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    return payload, body
