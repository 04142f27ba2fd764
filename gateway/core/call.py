"""The call object: one request on its way through the pipeline, whatever it came from (an
HTTP request, an audio upload, a batch row, an ensemble member).

`new_call` is the one place a call is made; everything else derives one from another with
`Call.derive` (a chain's next model, an ensemble's member), so a field added here reaches every
workload.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from orchestra.config import ApiKey

from ..metrics import GatewayMetrics
from .dialect import Dialect
from .request_key import NO_KEY, RequestKey
from .traits import PLAIN, Traits

SERVED_BY = "x-orchestra-served-by"  # reply header: the upstream name that answered
# Reply header: the engine that answered, as `host:port` (the node and the port); an
# ensemble's merged reply lists its members' engines, comma-separated.
REPLICA = "x-orchestra-replica"
# What an answer from the response cache cost the engines, as a `usage` (rate-limit settling).
NO_TOKENS = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


class UsageTab(Protocol):
    """A charged call's account (gateway/usage/accounts.Tab): every reply's `usage` (`cached`:
    an answer the response cache served, no engine token spent), and the answer's status
    once it is counted."""

    def usage(self, model: str, usage: object, *, cached: bool = False) -> None: ...

    def close(self, status: int) -> None: ...


class CallTrace(Protocol):
    """A traced request's server span (gateway/edge/traced.py): what the floors below the edge
    tell it. None on the call when tracing is off or the call has no request of its own."""

    def usage(self, usage: object) -> None: ...

    def first_byte(self) -> None: ...


@dataclass(slots=True)
class Marks:
    """What one client call went through, for its audit line. One object per client call:
    `Call.derive` copies the reference, so the proxy and the chain mark the client's call
    whichever derived call (a chain's next model, an ensemble's member) they hold."""

    attempts: int = 0  # upstream attempts, the proxy's, over every target (and member)
    fallback: str | None = None  # the chain's model that served, when it was not the first


@dataclass(slots=True)
class Call:
    path: str
    body: bytes | aiohttp.Payload  # a Payload: a spooled multipart upload (edge/multipart.py)
    payload: dict[str, Any]  # the parsed JSON body (for a multipart upload: its `model` only)
    model: str  # the name as asked; routing steps replace it with the server's name
    stream: bool
    headers: dict[str, str]  # sent upstream
    reply_headers: dict[str, str]  # sent to the client (x-request-id, rate-limit headers, ...)
    priority: str | None = None  # the admission priority asked for (header or batch setting)
    method: str = "POST"  # GET/POST for a stored response's retrieve/cancel (responses.py)
    response_id: str | None = None  # a stored response this call reads (retrieve, cancel)
    pinned: str | None = None  # the one replica URL that may serve it (the response's engine)
    answered_by: str | None = None  # set by the proxy: the replica URL that answered
    api_key: ApiKey | None = None  # who is charged (None: nobody, e.g. an ensemble member)
    body_size: int = 0  # bytes the client sent (the token estimate before `usage` is known)
    on_usage: Callable[[object], None] | None = None  # the reply's `usage` (rate-limit settling)
    tab: UsageTab | None = None  # the usage ledger's and budgets' account (set by the opener)
    route_key: RequestKey = NO_KEY  # what request-aware balancing looks at
    arrived: float = field(default_factory=time.perf_counter)  # for x-orchestra-overhead-ms
    upstream_s: float = 0.0  # time spent waiting on upstreams (excluded from the overhead)
    traits: Traits = PLAIN  # its route's: the API it speaks, what may serve it (core/traits.py)
    cached: bool = True  # False: the response cache neither reads nor writes (ensemble members)
    marks: Marks = field(default_factory=Marks)  # shared with derived calls (audit lines)
    trace: CallTrace | None = None  # the request's server span, when traced (set by the edge)

    @property
    def dialect(self) -> Dialect:
        """The API it speaks: the shape of its errors, whole and as a stream's last event."""
        return self.traits.dialect

    def usage(self, metrics: GatewayMetrics, usage: object) -> None:
        """The reply's `usage` (or None): counted in metrics, handed to `on_usage` and to the
        call's tab (the served model's tokens, on the key's ledger)."""
        metrics.count_usage(self.model, usage)
        if usage is not None:
            if self.trace is not None:
                self.trace.usage(usage)
            if self.on_usage is not None:
                self.on_usage(usage)
            if self.tab is not None:
                self.tab.usage(self.model, usage)

    def cache_hit(self, model: str, usage: object) -> None:
        """Answered by the response cache with a stored answer of `model` carrying `usage`: no
        engine spent a token, so the rate limit settles at none and the tab counts the stored
        tokens as cached (engine metrics count nothing: no engine answered). A stored answer
        without a usage still cost nothing: the tab settles at none, not at its estimate."""
        if self.on_usage is not None:
            self.on_usage(NO_TOKENS)
        if self.tab is not None:
            self.tab.usage(model, NO_TOKENS if usage is None else usage, cached=True)

    def derive(self, **changes: Any) -> Call:
        """A call for another model or member: the changes applied, headers copied (each
        attempt's reply headers are its own), the marks shared (the client call's)."""
        changes.setdefault("reply_headers", dict(self.reply_headers))
        return dataclasses.replace(self, **changes)


def new_call(
    path: str,
    body: bytes | aiohttp.Payload,
    payload: dict[str, Any],
    model: str,
    *,
    request_id: str,
    stream: bool,
    content_type: str = "application/json",
    authorization: str | None = None,
    api_key: ApiKey | None = None,
    priority: str | None = None,
    body_size: int | None = None,
    raw_headers: Sequence[tuple[bytes, bytes]] = (),
    arrived: float | None = None,
    method: str = "POST",
    response_id: str | None = None,
    traits: Traits = PLAIN,
) -> Call:
    """A call as it enters the pipeline. `authorization` is the client's own header, passed
    upstream only when the gateway checks no keys itself (the engine may want its own)."""
    headers = {"content-type": content_type, "x-request-id": request_id}
    if authorization and api_key is None:
        headers["authorization"] = authorization
    return Call(
        path=path,
        body=body,
        payload=payload,
        model=model,
        stream=stream,
        headers=headers,
        reply_headers={},
        priority=priority,
        api_key=api_key,
        body_size=len(body) if body_size is None and isinstance(body, bytes) else body_size or 0,
        route_key=RequestKey(payload, raw_headers),
        arrived=time.perf_counter() if arrived is None else arrived,
        method=method,
        response_id=response_id,
        traits=traits,
    )
