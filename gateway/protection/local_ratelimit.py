"""Per-key rate limits kept in this process: requests and tokens per minute, as token buckets.

A bucket holds up to a minute's allowance and refills continuously. Tokens are charged up front
from an estimate (prompt bytes / 4 + `max_tokens`, or `ratelimit_default_completion_tokens` when
absent) — like OpenAI's own limiter — so a request is judged before it costs anything; when the
reply's `usage` arrives the estimate is replaced by the real count (`settle`). Replies carry
OpenAI's `x-ratelimit-*` headers; a refusal is `Overloaded` (429 + Retry-After).

The Redis-backed limiter (`shared_ratelimit.py`) builds on these buckets and falls back to
them; `ratelimit.make_limiter` chooses between the two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from orchestra.config import ApiKey, GatewayConfig
from orchestra.runtime import Bounded

from ..core.errors import Overloaded


class Bucket:
    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = float(per_minute)
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` fits (0 = it fits now)."""
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) / self.rate


def estimate_tokens(payload: Mapping[str, Any], body_bytes: int, default_completion: int) -> int:
    completion = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if not isinstance(completion, int) or isinstance(completion, bool) or completion < 0:
        completion = default_completion
    n = payload.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 128 else 1
    return body_bytes // 4 + completion * choices


def usage_total(usage: object) -> int | None:
    """A reply's `usage.total_tokens`, or None when it does not carry a usable one."""
    if not isinstance(usage, dict):
        return None
    actual = usage.get("total_tokens")
    if not isinstance(actual, int) or isinstance(actual, bool) or actual < 0:
        return None
    return actual


def rate_limited(key: ApiKey, what: str, wait: float, headers: dict[str, str]) -> Overloaded:
    """The 429 for a key past its `what` (requests or tokens) per minute."""
    return Overloaded(
        f"rate limit of {what} per minute reached for key `{key.name}`; retry in {wait:.1f}s",
        retry_after_s=wait,
        code="rate_limit_exceeded",
        headers=headers,
    )


def _duration(seconds: float) -> str:
    return f"{math.ceil(seconds * 1000)}ms" if seconds < 1 else f"{seconds:.1f}s"


class RateLimiter:
    """Local buckets (this process). With workers, each has its exact share of every limit;
    `ratelimit.make_limiter` returns the Redis-backed one when `gateway.redis_url` is set."""

    def __init__(self, config: GatewayConfig) -> None:
        self.default_completion = config.ratelimit_default_completion_tokens
        self._requests: dict[str, Bucket] = {}
        self._tokens: dict[str, Bucket] = {}
        self._keys = len(config.api_keys)  # buckets are made here, one or two per key, only
        for key in config.api_keys:
            if key.requests_per_minute:
                self._requests[key.name] = Bucket(key.requests_per_minute)
            if key.tokens_per_minute:
                self._tokens[key.name] = Bucket(key.tokens_per_minute)

    def bounded(self) -> Bounded:
        """The buckets (request and token windows): two per configured key at most."""
        return Bounded(len(self._requests) + len(self._tokens), 2 * self._keys)

    def admit(self, key: ApiKey, payload: Mapping[str, Any], body_bytes: int) -> dict[str, str]:
        """Charge one request for `key`; returns the x-ratelimit-* headers or raises 429."""
        requests = self._requests.get(key.name)
        tokens = self._tokens.get(key.name)
        if requests is None and tokens is None:
            return {}
        now = time.monotonic()
        cost = estimate_tokens(payload, body_bytes, self.default_completion)
        wait = 0.0
        for bucket, amount in ((requests, 1.0), (tokens, float(cost))):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(amount))
        if wait == 0.0:
            if requests is not None:
                requests.take(1.0)
            if tokens is not None:
                tokens.take(float(cost))
        headers = self._headers(requests, tokens)
        if wait > 0.0:
            what = "requests" if requests is not None and requests.wait_for(1.0) else "tokens"
            raise rate_limited(key, what, wait, headers)
        return headers

    async def admit_async(
        self, key: ApiKey, payload: Mapping[str, Any], body_bytes: int
    ) -> dict[str, str]:
        """`admit` for the request path; the Redis-backed limiter overrides it."""
        return self.admit(key, payload, body_bytes)

    async def close(self) -> None:
        """Nothing to close here; the Redis-backed limiter closes its client."""

    def settle(
        self, key: ApiKey, payload: Mapping[str, Any], body_bytes: int, usage: object
    ) -> None:
        """Give back (or charge) the difference between the estimate and the reply's usage."""
        tokens = self._tokens.get(key.name)
        actual = usage_total(usage)
        if tokens is None or actual is None:
            return
        charged = min(
            float(estimate_tokens(payload, body_bytes, self.default_completion)), tokens.capacity
        )  # `take` never charges more than a bucket holds
        tokens.refill(time.monotonic())
        tokens.level = min(tokens.capacity, tokens.level + charged - actual)

    @staticmethod
    def _headers(requests: Bucket | None, tokens: Bucket | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, bucket in (("requests", requests), ("tokens", tokens)):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = _duration(bucket.reset_s())
        return headers
