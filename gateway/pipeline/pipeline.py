"""The one pipeline: every call (HTTP request, audio upload, batch row, ensemble member) passes
the same steps, in this order:

1. resolve the name: alias -> ensemble (fanned out, each member re-enters at step 1), or a
   fallback chain of targets (a server, or an adapter and the base that serves it);
2. rate limit: the call's API key is charged (once per client call: members carry no key);
3. for each target of the chain: route (a cold managed model is ensured first) -> admit ->
   proxy (the proxy retries on another replica before the first byte);
4. next in chain: when a target is unavailable, timed out, overloaded or answered 5xx;
5. Ollama: when the whole chain failed (unavailable, timeout, overloaded, 502/503/504), for the
   first target `fallback.ollama.models` maps, on the paths whose traits name an Ollama path.

A call about a stored response (Responses API: a retrieve, a cancel, a `previous_response_id`
follow-up) is pinned to the engine that stored it (`responses.py`) and takes step 3 alone.

Retries live in two places only: the proxy's (another replica, step 3) and the chain's (the
next model, step 4). A streamed call to a model that must load first may get SSE comments
while it waits (`loading.py`). The answer is a plain `core.reply.Reply` (status, headers, a
body of bytes or a stream, what to run when it closes), read by whoever called: the edge writes
it to the client, a batch row or an ensemble member reads it in-process. Nothing here counts
answers: the edge does (`edge/count.count_answer`), for batch rows too (`batch/send.py` asks it).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, runtime_checkable

import aiohttp
import orjson

from ..cluster.routing import Router
from ..core.call import SERVED_BY, Call
from ..core.errors import GatewayError, Overloaded, Unavailable, UpstreamTimeout
from ..core.reply import Reply
from ..protection.admission import Admission, release_when_done
from ..protection.ratelimit import RateLimiter
from ..upstream.ollama_client import OllamaClient
from ..upstream.proxy import Proxy
from .aliases import ModelMap, Target
from .ensembles import serve_ensemble
from .loading import LoadingComments
from .responses import PATH as RESPONSES_PATH
from .responses import StoredResponses, gone, pinned_route

_NEXT_ERRORS = (Unavailable, UpstreamTimeout, Overloaded)  # the next model in the chain serves
# An upstream answer Ollama may stand in for, and the reason its fallback counter records.
_OLLAMA_STATUS = {502: "upstream_error", 503: "unavailable", 504: "timeout"}


class Pipeline:
    def __init__(
        self,
        models: ModelMap,
        limiter: RateLimiter,
        router: Router,
        admission: Admission,
        proxy: Proxy,
        fallback: OllamaClient | None,
        loading: LoadingComments | None,
        stored: StoredResponses,
    ) -> None:
        self.models = models
        self._limiter = limiter
        self._router = router
        self._admission = admission
        self._proxy = proxy
        self._fallback = fallback
        self._loading = loading
        self._stored = stored

    async def serve(self, call: Call) -> Reply:
        """The entrance: a call as shaped by the edge, the batch runner or an ensemble."""
        if call.response_id is not None:  # a stored response's retrieve or cancel: no model
            model, url = await self._stored.locate(call.response_id)
            return await self._one(call.derive(model=model, pinned=url))
        name = self.models.resolve(call.model)  # step 1
        await self._charge(call)  # step 2
        ensemble = self.models.ensembles.get(name)
        if ensemble is not None:
            return await serve_ensemble(self, call, ensemble)
        chain = self.models.chain(name)
        previous = self._stored.stored_id(call)
        if previous is not None:
            # A follow-up: only the engine holding the previous response can continue it (no
            # next model in the chain, no Ollama: neither holds the conversation).
            model, url = await self._stored.locate(previous, [t.route for t in chain])
            target = next(t for t in chain if t.route == model)
            body = retarget(call, target)
            return await self._one(call.derive(body=body, model=model, pinned=url))
        if self._loading is not None and self._loading.wants(chain[0].route, call.stream):
            work = functools.partial(self._chain, call, chain)
            return self._loading.stream(chain[0].route, work, call.reply_headers, call.dialect)
        return await self._chain(call, chain)

    async def _charge(self, call: Call) -> None:
        key = call.api_key
        if key is None:
            return
        size = call.body_size
        call.reply_headers.update(await self._limiter.admit_async(key, call.payload, size))
        call.on_usage = functools.partial(self._limiter.settle, key, call.payload, size)

    async def _chain(self, call: Call, chain: list[Target]) -> Reply:
        failure: GatewayError | Reply | None = None
        for target in chain:  # step 4: the next target when one cannot serve
            body = retarget(call, target)
            # The common case (no alias, chain or adapter) sends the call itself: no copy.
            same = body is call.body and target.route == call.model
            attempt = call if same else call.derive(body=body, model=target.route)
            try:
                response = await self._one(attempt)
            except _NEXT_ERRORS as exc:
                failure = exc
                continue
            if response.status >= 500:
                failure = response
                continue
            if target is not chain[0] and failure is not None:
                self.models.fallback_pairs.labels(
                    chain[0].upstream_name, target.upstream_name, _reason(failure)
                ).inc()
            response.headers[SERVED_BY] = target.upstream_name
            return response
        assert failure is not None
        served = await self._ollama(call, chain, failure)  # step 5
        if served is not None:
            return served
        if isinstance(failure, Reply):
            return failure
        failure.headers.update(call.reply_headers)
        raise failure

    async def _one(self, call: Call) -> Reply:
        """Step 3 for one target: route (ensure), admit, proxy."""
        route = await self._router.route(call.model)
        if call.pinned is not None:
            pinned = pinned_route(route, call.pinned)
            if pinned is None:
                raise gone(StoredResponses.stored_id(call) or "")
            route = pinned
        gate = self._admission.gate(call.model)
        if gate is not None:
            await gate.acquire(self._admission.priority(call.priority))
        try:
            response = await self._proxy.forward(call, route)
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        if call.path == RESPONSES_PATH:
            response = self._stored.learn(call, response)
        return response if gate is None else release_when_done(response, gate)

    async def _ollama(
        self, call: Call, chain: list[Target], failure: GatewayError | Reply
    ) -> Reply | None:
        fallback = self._fallback
        if fallback is None or not fallback.healthy or call.traits.ollama is None:
            return None
        if isinstance(failure, Reply) and failure.status not in _OLLAMA_STATUS:
            return None
        target = next((t for t in chain if fallback.covers(t.route)), None)
        if target is None:
            return None
        attempt = call.derive(model=target.route)
        reason = _OLLAMA_STATUS[failure.status] if isinstance(failure, Reply) else _reason(failure)
        served = await fallback.forward(attempt, call.payload, reason)
        if served is not None:
            served.headers[SERVED_BY] = f"ollama:{target.route}"
        return served


@runtime_checkable
class RetargetableBody(Protocol):
    """A non-JSON body (a multipart upload, edge/multipart.py) that can name another model."""

    def with_model(self, name: str) -> Any: ...


def retarget(call: Call, target: Target) -> bytes | aiohttp.Payload:
    """`call`'s body naming `target`'s upstream name (unchanged when it already does)."""
    if call.payload.get("model") == target.upstream_name:
        return call.body
    if isinstance(call.body, RetargetableBody):
        body: bytes | aiohttp.Payload = call.body.with_model(target.upstream_name)
        return body
    return orjson.dumps({**call.payload, "model": target.upstream_name})


def _reason(failure: GatewayError | Reply) -> str:
    if isinstance(failure, Reply):
        return f"http_{failure.status}"
    if isinstance(failure, Overloaded):
        return "overloaded"
    return "timeout" if isinstance(failure, UpstreamTimeout) else "unavailable"
