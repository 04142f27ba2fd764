"""The one pipeline: every call (HTTP request, audio upload, batch row, ensemble member) passes
the same steps, in this order:

1. resolve the name: alias -> ensemble (fanned out, each member re-enters at step 1), or a
   fallback chain of targets (a server, or an adapter and the base that serves it);
2. rate limit: the call's API key is charged (once per client call: members carry no key);
3. for each target of the chain, its backend (`upstream/backend.py`) forwards the call: the
   engines (`engines.py`: route, a cold managed model ensured first -> admit -> proxy, which
   retries on another replica before the first byte), or Ollama, the chain's last target when
   `fallback.ollama.models` maps one of its models, on the paths whose traits name an Ollama
   path, while it is up;
4. next in chain: when a target is unavailable, timed out, overloaded or answered 5xx (the
   last one's failure is the answer; a backend that does not take the call is skipped).

A call about a stored response (Responses API: a retrieve, a cancel, a `previous_response_id`
follow-up) is pinned to the engine that stored it (`responses.py`) and takes step 3 alone.

Retries live in two places only: the proxy's (another replica, before the first byte, step 3)
and the chain's (the next target, step 4); batch rows get both by entering here like any call.
A streamed call to a model that must load first may get SSE comments while it waits
(`loading.py`). The answer is a plain `core.reply.Reply` (status, headers, a body of bytes or a
stream, what to run when it closes), read by whoever called: the edge writes it to the client,
a batch row or an ensemble member reads it in-process. Nothing here counts answers: the edge
does (`edge/count.count_answer`), the batch sender for its rows (`ModelMetrics.answered`, the
one writer both use).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, runtime_checkable

import aiohttp
import orjson
from opentelemetry.trace import StatusCode

from orchestra.tracing import Tracing

from ..core.call import SERVED_BY, Call
from ..core.errors import GatewayError, Overloaded, Unavailable, UpstreamTimeout
from ..core.reply import Reply
from ..metrics import GatewayMetrics
from ..protection.ratelimit import RateLimiter
from ..upstream.backend import Backend
from .aliases import ENGINES, OLLAMA, ModelMap, Target
from .cache import HEADER as CACHE_HEADER
from .cache import ResponseCache
from .engines import Engines
from .ensembles import serve_ensemble
from .loading import LoadingComments
from .responses import StoredResponses

_NEXT_ERRORS = (Unavailable, UpstreamTimeout, Overloaded)  # the next target in the chain serves
# Why Ollama served, as its fallback counter (`orchestra_fallback_total`) has always said it.
_OLLAMA_REASON = {502: "upstream_error", 503: "unavailable", 504: "timeout"}


class Pipeline:
    def __init__(
        self,
        models: ModelMap,
        limiter: RateLimiter,
        engines: Engines,
        fallback: Backend | None,
        loading: LoadingComments | None,
        stored: StoredResponses,
        metrics: GatewayMetrics,
        cache: ResponseCache | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.models = models
        self._tracing = tracing or Tracing(None)
        self._limiter = limiter
        self._engines = engines
        # Each target's backend, by the name the chain gives it (`aliases.Target.backend`).
        self._backends: dict[str, Backend] = {ENGINES: engines}
        if fallback is not None:
            self._backends[OLLAMA] = fallback
        self._loading = loading
        self._stored = stored
        self._metrics = metrics
        self._cache = cache  # None: `gateway.cache.enabled` is off

    async def serve(self, call: Call) -> Reply:
        """The entrance: a call as shaped by the edge, the batch runner or an ensemble."""
        if call.response_id is not None:  # a stored response's retrieve or cancel: no model
            model, url = await self._stored.locate(call.response_id)
            return await self._engines.forward(call.derive(model=model, pinned=url))
        name = self.models.resolve(call.model)  # step 1
        await self._charge(call)  # step 2
        ensemble = self.models.ensembles.get(name)
        chain = [] if ensemble is not None else self.models.chain(name)
        previous = None if ensemble is not None else self._stored.stored_id(call)
        if self._cache is not None and (ensemble is not None or previous is not None):
            call.reply_headers[CACHE_HEADER] = "bypass"  # copied into every reply
        if ensemble is not None:
            return await serve_ensemble(self, call, ensemble)
        if previous is not None:
            # A follow-up: only the engine holding the previous response can continue it (no
            # next model in the chain, no Ollama: neither holds the conversation).
            engines = [t for t in chain if t.backend == ENGINES]
            model, url = await self._stored.locate(previous, [t.route for t in engines])
            target = next(t for t in engines if t.route == model)
            body = retarget(call, target)
            return await self._engines.forward(call.derive(body=body, model=model, pinned=url))
        if self._cache is not None:
            produce = functools.partial(self._answer, call, chain)
            return await self._cache.serve(call, chain[0], produce)
        return await self._answer(call, chain)

    async def _answer(self, call: Call, chain: list[Target]) -> Reply:
        if self._loading is not None and self._loading.wants(chain[0].route, call.stream):
            work = functools.partial(self._chain, call, chain)
            return self._loading.stream(chain[0].route, work, call.reply_headers, call.dialect)
        return await self._chain(call, chain)

    async def _charge(self, call: Call) -> None:
        key = call.api_key
        if key is None:
            return
        size = call.body_size
        with self._tracing.span("rate_limit") as span:
            span.set_attribute("orchestra.key", key.name)
            call.reply_headers.update(await self._limiter.admit_async(key, call.payload, size))
        call.on_usage = functools.partial(self._limiter.settle, key, call.payload, size)

    async def _chain(self, call: Call, chain: list[Target]) -> Reply:
        failure: GatewayError | Reply | None = None
        for target in chain:  # step 4: the next target when one cannot serve
            backend = self._backends.get(target.backend)
            body = retarget(call, target)
            # The common case (no alias, chain or adapter) sends the call itself: no copy.
            same = body is call.body and target.route == call.model
            attempt = call if same else call.derive(body=body, model=target.route)
            if backend is None or not backend.takes(attempt):
                continue
            try:
                # A chain of one (the common case) is its target's attempts: no step span.
                with self._tracing.span(_step_name(target), when=len(chain) > 1) as span:
                    span.set_attribute("orchestra.target", target.served_by)
                    span.set_attribute("orchestra.backend", backend.name)
                    if failure is not None:  # why the step before did not serve
                        span.set_attribute("orchestra.after", _reason(failure))
                    reply = await backend.forward(attempt)  # step 3
                    span.set_attribute("http.response.status_code", reply.status)
                    if reply.status >= 500:  # the next target serves: this step failed
                        span.set_status(StatusCode.ERROR)
            except _NEXT_ERRORS as exc:
                failure = exc
                continue
            if target.backend == OLLAMA:
                self._metrics.fallbacks.labels(target.route, _ollama_reason(failure)).inc()
            if reply.status >= 500:
                failure = reply
                continue
            if target is not chain[0] and failure is not None:
                call.marks.fallback = target.served_by  # the audit line's
                self.models.fallback_pairs.labels(
                    chain[0].upstream_name, target.served_by, _reason(failure)
                ).inc()
            reply.headers[SERVED_BY] = target.served_by
            return reply
        assert failure is not None  # the first target is the engines', which take every call
        if isinstance(failure, Reply):
            return failure
        failure.headers.update(call.reply_headers)
        raise failure


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


def _step_name(target: Target) -> str:
    """A chain step's span name: Ollama's says it is the fallback."""
    return "ollama fallback" if target.backend == OLLAMA else "chain step"


def _reason(failure: GatewayError | Reply | None) -> str:
    if isinstance(failure, Reply):
        return f"http_{failure.status}"
    if isinstance(failure, Overloaded):
        return "overloaded"
    return "timeout" if isinstance(failure, UpstreamTimeout) else "unavailable"


def _ollama_reason(failure: GatewayError | Reply | None) -> str:
    if isinstance(failure, Reply):
        return _OLLAMA_REASON.get(failure.status, f"http_{failure.status}")
    return _reason(failure)
