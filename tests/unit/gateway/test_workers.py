"""Dividing limits among gateway workers: exact shares, and refusals that name the YAML path."""

from __future__ import annotations

import pytest

from orchestra.config import ConfigError, parse_config
from orchestra.gateway.workers import MAX_DEFAULT_WORKERS, cores, divide, share, worker_count


def _config(workers: int | None = None, rpm: int = 100, inflight: int = 7) -> dict[str, object]:
    gateway: dict[str, object] = {
        "api_keys": [{"name": "k", "sha256": "0" * 64, "requests_per_minute": rpm}]
    }
    if workers is not None:
        gateway["workers"] = workers
    return {
        "batch": {"enabled": False},  # the Batch API keeps the gateway to one process
        "gateway": gateway,
        "servers": [{"name": "m", "url": "http://127.0.0.1:9", "max_inflight": inflight}],
        "rotation_pool": [{"name": "n", "url": "http://127.0.0.1:10", "max_queue": 5}],
    }


@pytest.mark.parametrize("total", [1, 7, 100, 101])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shares_add_up_exactly(total: int, count: int) -> None:
    parts = [share(total, i, count) for i in range(count)]
    assert sum(parts) == total
    assert max(parts) - min(parts) <= 1


def test_divide_gives_each_worker_its_share() -> None:
    config = parse_config(_config(workers=3))
    parts = [divide(config, i, 3) for i in range(3)]
    assert [p.gateway.api_keys[0].requests_per_minute for p in parts] == [34, 33, 33]
    assert [p.servers[0].max_inflight for p in parts] == [3, 2, 2]
    assert [p.servers[0].max_queue for p in parts] == [0, 0, 0]
    assert [p.rotation_pool[0].max_queue for p in parts] == [2, 2, 1]
    assert parts[0].gateway.api_keys[0].tokens_per_minute is None  # unlimited stays unlimited
    assert config.gateway.api_keys[0].requests_per_minute == 100  # the original is untouched
    assert divide(config, 0, 1) is config


def test_explicit_workers_above_a_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"servers\[0\]\.max_inflight: 2 cannot be divided"):
        worker_count(parse_config(_config(workers=3, inflight=2)))
    assert worker_count(parse_config(_config(workers=2, inflight=2))) == 2


def test_the_batch_api_keeps_one_process() -> None:
    with_batch = {**_config(workers=2), "batch": {"enabled": True}}
    with pytest.raises(ConfigError, match=r"gateway.workers: 2 needs batch.enabled: false"):
        worker_count(parse_config(with_batch))
    assert worker_count(parse_config({**_config(), "batch": {"enabled": True}})) == 1


def test_default_is_one_per_core_capped_and_never_above_a_limit() -> None:
    expected = min(cores(), MAX_DEFAULT_WORKERS)
    assert worker_count(parse_config(_config())) == expected
    assert worker_count(parse_config(_config(rpm=1))) == 1
