from __future__ import annotations

import pytest

from orchestra.config import ApiKey, GatewayConfig
from orchestra.gateway.core.errors import Overloaded, Unauthorized
from orchestra.gateway.protection.keys import Forbidden, KeyRing, bearer, hash_key
from orchestra.gateway.protection.local_ratelimit import Bucket, RateLimiter, estimate_tokens


def _config(**kw: object) -> GatewayConfig:
    keys = [
        ApiKey(name="alice", sha256=hash_key("sk-alice"), requests_per_minute=2),
        ApiKey(name="bob", sha256=hash_key("sk-bob").upper(), tokens_per_minute=100),
    ]
    return GatewayConfig(api_keys=keys, admin_key_sha256=hash_key("sk-admin"), **kw)  # type: ignore[arg-type]


def test_bearer_parsing() -> None:
    assert bearer(b"Bearer sk-1") == "sk-1"
    assert bearer(b"bearer  sk-1 ") == "sk-1"
    assert bearer(b"Basic abc") is None
    assert bearer(b"Bearer") is None and bearer(None) is None


def test_keys_are_checked_by_hash() -> None:
    ring = KeyRing(_config())
    assert ring.enabled
    assert ring.api_key(b"Bearer sk-alice").name == "alice"
    assert ring.api_key(b"Bearer sk-bob").name == "bob"  # upper-case hex in config is fine
    for header in (None, b"Bearer sk-wrong", b"Bearer sk-admin"):
        with pytest.raises(Unauthorized) as info:
            ring.api_key(header)
        assert info.value.status == 401 and "sk-" not in info.value.message


def test_admin_key() -> None:
    ring = KeyRing(_config())
    ring.check_admin(b"Bearer sk-admin", "10.0.0.1")
    with pytest.raises(Unauthorized):
        ring.check_admin(b"Bearer sk-alice", "127.0.0.1")
    open_ring = KeyRing(GatewayConfig())
    assert not open_ring.enabled
    open_ring.check_admin(None, "127.0.0.1")
    with pytest.raises(Forbidden):
        open_ring.check_admin(None, "10.0.0.1")


def test_request_limit_and_headers() -> None:
    config = _config()
    limiter = RateLimiter(config)
    alice = config.api_keys[0]
    headers = limiter.admit(alice, {}, 10)
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1"
    limiter.admit(alice, {}, 10)
    with pytest.raises(Overloaded) as info:
        limiter.admit(alice, {}, 10)
    assert info.value.code == "rate_limit_exceeded"
    assert int(info.value.headers["retry-after"]) >= 1
    assert info.value.headers["x-ratelimit-remaining-requests"] == "0"


def test_token_limit_uses_the_estimate() -> None:
    config = _config()
    limiter = RateLimiter(config)
    bob = config.api_keys[1]
    headers = limiter.admit(bob, {"max_tokens": 50}, 40)  # 10 + 50
    assert headers["x-ratelimit-remaining-tokens"] == "40"
    with pytest.raises(Overloaded):
        limiter.admit(bob, {"max_tokens": 50}, 40)
    unlimited = ApiKey(name="carol", sha256=hash_key("x"))
    assert limiter.admit(unlimited, {}, 10) == {}


def test_estimate_and_bucket() -> None:
    assert estimate_tokens({"max_tokens": 7, "n": 2}, 40, 256) == 10 + 14
    assert estimate_tokens({"max_tokens": "a"}, 4, 256) == 1 + 256
    bucket = Bucket(60)
    bucket.take(60)
    assert bucket.wait_for(1) == pytest.approx(1.0)
    bucket.refill(bucket.stamp + 0.5)
    assert bucket.level == pytest.approx(0.5)


def test_usage_settles_the_token_estimate() -> None:
    config = _config()
    limiter = RateLimiter(config)
    bob = config.api_keys[1]
    payload = {"max_tokens": 50}
    limiter.admit(bob, payload, 40)  # estimate 60 of 100
    limiter.settle(bob, payload, 40, {"prompt_tokens": 10, "total_tokens": 15})
    headers = limiter.admit(bob, payload, 40)  # 45 given back: this one fits now
    assert int(headers["x-ratelimit-remaining-tokens"]) in (25, 26)  # refill may add a token
    limiter.settle(bob, payload, 40, {"total_tokens": 90})  # 30 more than estimated
    with pytest.raises(Overloaded):
        limiter.admit(bob, {"max_tokens": 1}, 4)
    limiter.settle(bob, payload, 40, None)  # no usage: the estimate stands
    limiter.settle(bob, payload, 40, {"total_tokens": "x"})
