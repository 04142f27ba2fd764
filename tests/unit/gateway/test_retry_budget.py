"""The retry budget: a floor plus a ratio of recent requests, over a sliding window."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestra.gateway.protection import retry_budget
from orchestra.gateway.protection.retry_budget import RetryBudget


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(retry_budget, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def _spend_all(budget: RetryBudget, limit: int = 10_000) -> int:
    spent = 0
    while spent < limit and budget.try_spend():
        spent += 1
    return spent


def test_floor_allows_retries_without_traffic(clock: Clock) -> None:
    budget = RetryBudget(ratio=0.2, floor=3)
    assert _spend_all(budget) == 3


def test_ratio_of_recent_requests(clock: Clock) -> None:
    budget = RetryBudget(ratio=0.2, floor=10)
    for _ in range(100):
        budget.record_request()
    assert _spend_all(budget) == 30  # 10 + 0.2 x 100


def test_retry_storm_is_cut_off(clock: Clock) -> None:
    """Every request failing: retries stay near ratio x requests instead of max_attempts x."""
    budget = RetryBudget(ratio=0.1, floor=5)
    retries = 0
    for second in range(5):
        clock.now = 1000.0 + second
        for _ in range(200):
            budget.record_request()
            for _attempt in range(2):  # max_attempts=3: up to two retries each
                if budget.try_spend():
                    retries += 1
    assert 0 < retries <= 5 + 0.1 * 1000  # without a budget: 2000


def test_zero_budget_refuses_every_retry(clock: Clock) -> None:
    budget = RetryBudget(ratio=0.0, floor=0)
    for _ in range(50):
        budget.record_request()
    assert not budget.try_spend()


def test_budget_refills_after_the_window(clock: Clock) -> None:
    budget = RetryBudget(ratio=0.0, floor=2, window_s=10)
    assert _spend_all(budget) == 2
    clock.now += 5
    assert not budget.try_spend()  # still inside the window
    clock.now += 5
    assert _spend_all(budget) == 2  # the old retries aged out


def test_old_requests_stop_counting(clock: Clock) -> None:
    budget = RetryBudget(ratio=1.0, floor=0, window_s=10)
    for _ in range(20):
        budget.record_request()
    clock.now += 11
    assert not budget.try_spend()


def test_buckets_are_reused_across_wraparound(clock: Clock) -> None:
    budget = RetryBudget(ratio=1.0, floor=0, window_s=3)
    budget.record_request()
    clock.now += 3  # same bucket index, a different second: it must be cleared
    assert not budget.try_spend()
    budget.record_request()
    assert budget.try_spend()
    assert not budget.try_spend()
