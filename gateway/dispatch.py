"""One proxied request, end to end: route -> admission -> vLLM replicas -> Ollama fallback.

The fallback is taken only for models that `fallback.ollama.models` maps, while Ollama is
healthy, and only where no vLLM replica could serve: the model is unavailable (down, FAILED, no
supervisor), its swap timed out, it is overloaded beyond its queue, or every replica answered
502/503/504 or failed before the first byte. Otherwise the original error stands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import Response, StreamingResponse

from orchestra.gateway.admission import release_when_done
from orchestra.gateway.errors import GatewayError, Overloaded, Unavailable, UpstreamTimeout
from orchestra.gateway.proxy import UpstreamCall

if TYPE_CHECKING:
    from orchestra.gateway.app import Gateway

_FALLBACK_STATUS = {502: "upstream_error", 503: "unavailable", 504: "timeout"}
_FALLBACK_STATUSES = frozenset(_FALLBACK_STATUS)


async def dispatch(
    gw: Gateway,
    call: UpstreamCall,
    payload: dict[str, Any],
    priority: str | None,
    ollama: bool = True,  # False: a fallback chain (gateway/chains.py) decides on Ollama
) -> Response:
    fallback = gw.fallback if gw.fallback is not None and gw.fallback.covers(call.model) else None
    fallback = fallback if ollama else None
    try:
        route = await gw.router.route(call.model)
    except (Unavailable, UpstreamTimeout) as exc:
        if not ollama:
            raise
        reason = "timeout" if isinstance(exc, UpstreamTimeout) else "unavailable"
        return await _fall_back(gw, call, payload, reason, exc)
    gate = gw.admission.gate(call.model)
    if gate is not None:
        try:
            await gate.acquire(gw.admission.priority(priority))
        except Overloaded as exc:
            if fallback is None:
                raise
            return await _fall_back(gw, call, payload, "overloaded", exc)
    try:
        # With a fallback, a failed final answer is counted below, once it is known whether
        # Ollama served the request instead.
        uncounted = _FALLBACK_STATUSES if fallback is not None else frozenset()
        response = await gw.proxy.forward(call, route, uncounted)
    except BaseException:
        if gate is not None:
            gate.release()
        raise
    why = _FALLBACK_STATUS.get(response.status_code)
    if fallback is not None and why and not isinstance(response, StreamingResponse):
        if gate is not None:
            gate.release()
        return await _fall_back(gw, call, payload, why, response)
    return response if gate is None else release_when_done(response, gate)


async def _fall_back(
    gw: Gateway,
    call: UpstreamCall,
    payload: dict[str, Any],
    reason: str,
    original: GatewayError | Response,
) -> Response:
    """Serve from Ollama, else the original answer. Responses returned here are counted in
    `orchestra_requests_total` here; a raised original is counted by the app's handler."""
    fallback = gw.fallback
    if fallback is not None and fallback.covers(call.model) and fallback.healthy:
        served = await fallback.forward(call, payload, reason)
        if served is not None:
            gw.metrics.model(call.model).requests(served.status_code).inc()
            return served
    if isinstance(original, Response):
        gw.metrics.model(call.model).requests(original.status_code).inc()
        return original
    original.headers.update(call.reply_headers)
    raise original
