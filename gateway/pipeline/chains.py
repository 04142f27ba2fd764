"""Serving a model name through its fallback chain.

A request for a model with `fallbacks:` tries the chain in order (depth first, each model once).
The next model serves when one cannot: unavailable (down, FAILED, no supervisor), its swap
timed out, overloaded past its queue, or a 5xx answer after the proxy's own retries (all before
the first byte: a started stream is never switched). Only when the whole chain failed does the
Ollama fallback get a turn, for the first model of the chain that it maps. The answer carries
`x-orchestra-served-by` (the upstream name) and the upstream's own `model` field.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson
from starlette.responses import Response

from ..edge.errors import GatewayError, Overloaded, Unavailable, UpstreamTimeout
from ..upstream import ollama
from .aliases import Target
from .call import Call

if TYPE_CHECKING:
    from .workloads import Workloads

SERVED_BY = "x-orchestra-served-by"
_NEXT_ERRORS = (Unavailable, UpstreamTimeout, Overloaded)


@runtime_checkable
class RetargetableBody(Protocol):
    """A non-JSON body (multipart) that can name another model."""

    def with_model(self, name: str) -> Any: ...


def retarget(call: Call, payload: dict[str, Any], target: Target) -> Call:
    """`call` sent to `target`: routed to its server, the body naming its upstream name."""
    body: Any = call.body
    if payload.get("model") != target.upstream_name:
        if isinstance(body, RetargetableBody):
            body = body.with_model(target.upstream_name)
        else:
            body = orjson.dumps({**payload, "model": target.upstream_name})
    return dataclasses.replace(
        call, body=body, model=target.route, reply_headers=dict(call.reply_headers)
    )


def _reason(failure: GatewayError | Response) -> str:
    if isinstance(failure, Response):
        return f"http_{failure.status_code}"
    if isinstance(failure, Overloaded):
        return "overloaded"
    return "timeout" if isinstance(failure, UpstreamTimeout) else "unavailable"


async def serve_chain(
    wl: Workloads, call: Call, payload: dict[str, Any], priority: str | None, name: str
) -> Response:
    """Serve `name` (resolved: not an alias, not an ensemble) from its chain."""
    chain = wl.models.chain(name)
    if len(chain) == 1:
        attempt = retarget(call, payload, chain[0])
        response = await wl.dispatch(attempt, payload, priority, call.path in ollama.PATHS)
        response.headers[SERVED_BY] = chain[0].upstream_name
        return response
    failure: GatewayError | Response | None = None
    for target in chain:
        attempt = retarget(call, payload, target)
        try:
            response = await wl.dispatch(attempt, payload, priority, ollama=False)
        except _NEXT_ERRORS as exc:
            failure = exc
            continue
        if response.status_code >= 500:
            failure = response
            continue
        if target is not chain[0] and failure is not None:
            wl.models.fallback_pairs.labels(
                chain[0].upstream_name, target.upstream_name, _reason(failure)
            ).inc()
        response.headers[SERVED_BY] = target.upstream_name
        return response
    assert failure is not None
    served = await _ollama(wl, call, payload, chain, _reason(failure))
    if served is not None:
        return served
    if isinstance(failure, Response):
        return failure
    raise failure


async def _ollama(
    wl: Workloads, call: Call, payload: dict[str, Any], chain: list[Target], reason: str
) -> Response | None:
    fallback = wl.fallback
    if fallback is None or not fallback.healthy or call.path not in ollama.PATHS:
        return None
    for target in chain:
        if fallback.covers(target.route):
            attempt = retarget(call, payload, target)
            served = await fallback.forward(attempt, payload, reason)
            if served is not None:
                served.headers[SERVED_BY] = f"ollama:{target.route}"
                return served
            return None
    return None
