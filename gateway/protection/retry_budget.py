"""A retry budget: retries may add at most `ratio` x recent requests (+ a floor) of extra load.

Without it, a failing fleet turns every request into `max_attempts` requests exactly when it can
least afford them. Counts live in one-second buckets over a sliding window.
"""

from __future__ import annotations

import time


class RetryBudget:
    def __init__(self, ratio: float, floor: int, window_s: int = 10) -> None:
        self.ratio = ratio
        self.floor = floor
        self._window = window_s
        self._second = [0] * window_s  # which second each bucket holds
        self._requests = [0] * window_s
        self._retries = [0] * window_s

    def _bucket(self) -> int:
        now = int(time.monotonic())
        index = now % self._window
        if self._second[index] != now:
            self._second[index] = now
            self._requests[index] = 0
            self._retries[index] = 0
        return index

    def record_request(self) -> None:
        self._requests[self._bucket()] += 1

    def try_spend(self) -> bool:
        index = self._bucket()
        oldest = int(time.monotonic()) - self._window
        live = [i for i in range(self._window) if self._second[i] > oldest]
        requests = sum(self._requests[i] for i in live)
        retries = sum(self._retries[i] for i in live)
        if retries >= self.floor + self.ratio * requests:
            return False
        self._retries[index] += 1
        return True
