"""A response cache hit as the usage side counts it: the stored answer's tokens land on the key's
ledger (a real SQLite file) as cached tokens at no cost, the key's budget settles at nothing,
and its token rate limit gives the whole reservation back; the miss that stored it counts as
an engine's answer."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import orjson
import pytest

from orchestra.config import Budget, CacheConfig, GatewayConfig
from orchestra.gateway.core.call import SERVED_BY, Call, new_call
from orchestra.gateway.core.reply import JSON, Reply
from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.pipeline.aliases import Target
from orchestra.gateway.pipeline.cache import HEADER, ResponseCache, cache_key
from orchestra.gateway.pipeline.cache_store import MemoryStore
from orchestra.gateway.protection.budgets import BudgetExceeded
from orchestra.gateway.protection.keys import KeyRing
from orchestra.gateway.protection.local_ratelimit import RateLimiter
from orchestra.gateway.usage.accounts import Usage, build_usage

USAGE = {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}
PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
BODY = orjson.dumps(PAYLOAD)
TPM = 10_000
ESTIMATE = len(BODY) // 4 + 100  # no max_tokens: ratelimit_default_completion_tokens


def _config(tmp_path: Path) -> GatewayConfig:
    key = {
        "name": "a",
        "sha256": "a" * 64,
        "tokens_per_minute": TPM,
        "budget": {"tokens_per_day": 1_000_000, "cost_per_day": 100.0},
    }
    return GatewayConfig.model_validate(
        {
            "api_keys": [key],
            "usage": {"dir": str(tmp_path)},
            "pricing": {"m": {"input_per_1m": 1.0, "output_per_1m": 2.0}},
            "ratelimit_default_completion_tokens": 100,
        }
    )


class Engine:
    """`produce`: answers with USAGE, reported as the proxy reports an engine's usage."""

    def __init__(self, call: Call, metrics: GatewayMetrics) -> None:
        self.call = call
        self.metrics = metrics
        self.calls = 0

    async def __call__(self) -> Reply:
        self.calls += 1
        answer = {"id": "c", "object": "chat.completion", "choices": [], "usage": USAGE}
        self.call.usage(self.metrics, USAGE)
        return Reply(orjson.dumps(answer), 200, {SERVED_BY: "m"}, JSON)


async def _one(
    config: GatewayConfig, usage: Usage, limiter: RateLimiter, cache: ResponseCache
) -> tuple[str, int]:
    """One call as the edge and the pipeline make it: rate limit charged (settled through
    `on_usage`), tab opened and admitted, served by the cache, tab closed. Returns what the
    cache said and the engine's calls."""
    key = config.api_keys[0]
    call = new_call("/v1/chat/completions", BODY, PAYLOAD, "m", request_id="r", stream=False)
    call.api_key = key
    limiter.admit(key, call.payload, call.body_size)
    call.on_usage = functools.partial(limiter.settle, key, call.payload, call.body_size)
    tab = usage.tab(call, "m")
    await tab.admit()
    engine = Engine(call, GatewayMetrics())
    reply = await cache.serve(call, Target("m", "m"), engine)
    tab.close(reply.status)
    return reply.headers.get(HEADER) or call.reply_headers[HEADER], engine.calls


def _remaining_tokens(limiter: RateLimiter, config: GatewayConfig) -> int:
    """The key's token bucket as its next admission's header says it, before that charge."""
    headers = limiter.admit(config.api_keys[0], {"max_tokens": 0}, 0)
    return int(headers["x-ratelimit-remaining-tokens"])


def test_a_hit_is_counted_as_cached_tokens_and_costs_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path)
    metrics = GatewayMetrics()
    usage = build_usage(config, metrics, KeyRing(config))
    cache_config = CacheConfig(enabled=True)
    store = MemoryStore(cache_config.max_bytes, cache_config.max_entry_bytes)
    cache = ResponseCache(cache_config, metrics, store)

    async def run() -> list[tuple[str, int]]:
        await usage.start()
        said = [await _one(config, usage, limiter, cache) for _ in range(3)]
        await usage.ledger.flush()
        return said

    limiter = RateLimiter(config)
    assert asyncio.run(run()) == [("miss", 1), ("hit", 0), ("hit", 0)]
    # The miss charged its real 10 tokens; the hits gave their whole estimates back.
    assert _remaining_tokens(limiter, config) >= TPM - 10 - 1  # (refilled meanwhile, capped)
    (row,) = usage.store.rows(int(time.time()) - 3600)
    assert row["requests"] == 3
    assert (row["prompt_tokens"], row["completion_tokens"]) == (6, 4)  # the miss's only
    assert row["cached_tokens"] == 20  # each hit's prompt + completion
    assert row["cost"] == (6 * 1.0 + 4 * 2.0) / 1e6  # the hits cost nothing
    # The budget spent the miss's 10 tokens only (its reservations all settled): a limit of
    # 10 is reached, one of 11 is not.
    with pytest.raises(BudgetExceeded, match="used 10"):
        usage.budgets.admit_here("a", Budget(tokens_per_day=10), 0, 0.0)
    assert usage.budgets.admit_here("a", Budget(tokens_per_day=11), 0, 0.0) is not None
    cached = metrics.registry.get_sample_value(
        "orchestra_key_tokens_total", {"key": "a", "kind": "cached"}
    )
    assert cached == 20
    hits = metrics.registry.get_sample_value(
        "orchestra_response_cache_total", {"model": "m", "result": "hit"}
    )
    assert hits == 2
    asyncio.run(usage.close())


def test_a_hit_without_a_stored_usage_still_costs_nothing(tmp_path: Path) -> None:
    """An answer stored without `usage` (an engine that sent none): its hit settles the budget
    at nothing, not at the call's estimate as an engine's answer without usage does."""
    config = _config(tmp_path)
    usage = build_usage(config, GatewayMetrics(), KeyRing(config))
    cache_config = CacheConfig(enabled=True)
    store = MemoryStore(cache_config.max_bytes, cache_config.max_entry_bytes)
    cache = ResponseCache(cache_config, GatewayMetrics(), store)
    call = new_call("/v1/chat/completions", BODY, PAYLOAD, "m", request_id="r", stream=False)
    store.put(cache_key(call, "m", "a"), b'{"object": "chat.completion", "choices": []}', "m", 60)

    async def run() -> tuple[str, int]:
        await usage.start()
        said = await _one(config, usage, RateLimiter(config), cache)
        await usage.ledger.flush()
        return said

    assert asyncio.run(run()) == ("hit", 0)
    assert usage.budgets.admit_here("a", Budget(tokens_per_day=1), 0, 0.0) is not None
    (row,) = usage.store.rows(int(time.time()) - 3600)
    assert (row["requests"], row["prompt_tokens"], row["cached_tokens"]) == (1, 0, 0)
    asyncio.run(usage.close())
