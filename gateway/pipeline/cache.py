"""The response cache: exact-match replies for deterministic chat/completions and completions
calls (`gateway.cache`, README "Response cache"), consulted by `Pipeline.serve` around the
fallback chain.

A call is cacheable when its `temperature` is 0, it names a `seed`, or the client asks with
`x-orchestra-cache: use`. `cache-control: no-cache` skips reading (the answer is still stored),
`no-store` skips both. Every reply of a model path says what the cache did in
`x-orchestra-cache`: `hit`, `miss` or `bypass`.

Invariants:
- The key is the model that serves it (the chain's first target: its server, or its adapter),
  the path, the scope (the API key's name, or none when `shared`) and the body without `model`,
  `stream` and `stream_options`, serialised with sorted keys: key order and whitespace do not
  split it, and a stream and a plain request share an entry.
- Only whole 200 answers of that first target are stored (a fallback's answer is another
  model's); errors never are. A stream's answer is stored only once it ended with `[DONE]`
  and its usage (`cache_sse.py`), so a cut stream is never replayed; a stored answer replays
  as JSON or as a stream's events, whichever the call asked.
- The store (`cache_store.py`: this worker's memory, or Redis) never serves an entry past its
  TTL (the served model's `model_ttl_s`, else `ttl_s`).
- A hit is counted as what it cost: no engine token (`Call.cache_hit`: the stored usage lands
  on the key's ledger as cached tokens, its rate limit and budget settle at nothing).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from orchestra.config import CacheConfig, GatewayConfig

from ..core.call import SERVED_BY, Call
from ..core.reply import JSON, SSE, Reply, Stream
from ..metrics import GatewayMetrics
from .aliases import Target
from .cache_sse import Tee, replay
from .cache_store import MemoryStore, Store

HEADER = "x-orchestra-cache"  # request: `use`; reply: hit | miss | bypass
PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
_UNKEYED = frozenset({"model", "stream", "stream_options"})  # do not split the key


@dataclass(frozen=True, slots=True)
class Plan:
    """What the cache does for one call."""

    key: str | None  # None: bypass (neither read nor write)
    read: bool = False


def cache_key(call: Call, served_by: str, scope: str | None) -> str:
    """The entry a call reads and writes (module doc: what splits it and what does not)."""
    body = {k: v for k, v in call.payload.items() if k not in _UNKEYED}
    material = orjson.dumps(
        [scope, served_by, call.path, body], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    )
    return hashlib.sha256(material).hexdigest()


def deterministic(call: Call) -> bool:
    """Asked for an answer that does not vary: temperature 0, a seed, or the client says so."""
    payload = call.payload
    temperature = payload.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        if temperature == 0:
            return True
    if payload.get("seed") is not None:
        return True
    return (call.route_key.header(HEADER.encode()) or "").strip().lower() == "use"


def make_store(config: GatewayConfig) -> Store:
    """In this worker's memory, or in Redis when one is named (the cache's own, else the
    gateway's)."""
    cache = config.cache
    url = cache.redis_url or config.redis_url
    if url is None:
        return MemoryStore(cache.max_bytes, cache.max_entry_bytes)
    from .cache_redis import RedisStore  # the `redis` extra, imported only if used

    return RedisStore(url, config.redis_timeout_s, cache.max_entry_bytes)


class ResponseCache:
    def __init__(self, config: CacheConfig, metrics: GatewayMetrics, store: Store) -> None:
        self._config = config
        self._counted = metrics.response_cache  # by model served and hit|miss|bypass
        self.store = store  # `make_store`: memory or Redis

    def plan(self, call: Call, target: Target) -> Plan:
        if call.path not in PATHS or not isinstance(call.body, bytes):
            return Plan(None)
        control = (call.route_key.header(b"cache-control") or "").lower()
        if "no-store" in control or not deterministic(call):
            return Plan(None)
        scope = None if self._config.shared or call.api_key is None else call.api_key.name
        return Plan(cache_key(call, target.served_by, scope), read="no-cache" not in control)

    async def serve(
        self, call: Call, target: Target, produce: Callable[[], Awaitable[Reply]]
    ) -> Reply:
        """The cached answer, or `produce`'s (stored when whole and ours)."""
        if not call.cached:  # an ensemble member: the ensemble's call says what happened
            return await produce()
        plan = self.plan(call, target)
        if plan.key is None:
            call.reply_headers[HEADER] = "bypass"  # copied into every reply, errors included
            self._counted.labels(target.served_by, "bypass").inc()
            return await produce()
        if plan.read:
            entry = await self.store.get(plan.key)
            body = None if entry is None else _body_for(call, entry.body)
            if entry is not None and body is not None:
                headers = {**call.reply_headers, SERVED_BY: entry.served_by, HEADER: "hit"}
                # The gateway's own time until the head, as the proxy stamps its answers.
                overhead = time.perf_counter() - call.arrived - call.upstream_s
                headers["x-orchestra-overhead-ms"] = "%.3f" % (overhead * 1000)
                self._counted.labels(target.served_by, "hit").inc()
                call.cache_hit(target.route, _usage(entry.body))
                return Reply(body, 200, headers, SSE if call.stream else JSON)
        call.reply_headers[HEADER] = "miss"
        self._counted.labels(target.served_by, "miss").inc()
        reply = await produce()
        if reply.status != 200 or reply.headers.get(SERVED_BY) != target.served_by:
            return reply
        ttl = self._config.model_ttl_s.get(target.served_by, self._config.ttl_s)
        key = plan.key
        if isinstance(reply.body, Stream):  # stored once it ended whole (cache_sse.py)
            store = functools.partial(self.store.put, key, served_by=target.served_by, ttl_s=ttl)
            return reply.with_body(Tee(reply.body, store))
        if not call.stream:  # a plain answer comes whole
            self.store.put(key, reply.body, target.served_by, ttl)
        return reply


def _body_for(call: Call, stored: bytes) -> bytes | None:
    """A stored answer as this call wants it: JSON, or a stream's events (None: not one
    a replay can say, e.g. tool calls; the call goes on as a miss)."""
    if not call.stream:
        return stored
    options = call.payload.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return replay(stored, include_usage)


def _usage(stored: bytes) -> object:
    """The stored answer's `usage` (every stored answer has one: a stream's is stored only
    with it, and an engine's plain answer carries it)."""
    answer = orjson.loads(stored)
    return answer.get("usage") if isinstance(answer, dict) else None
