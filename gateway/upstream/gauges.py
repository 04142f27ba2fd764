"""vLLM's queue gauges, read from each engine's `/metrics`: the only scraper and parser of them.

`vllm:num_requests_running` and `vllm:num_requests_waiting` (summed over engines and labels)
steer two things: load-aware balancing (`HealthMonitor` sets `Replica.load`) and batch pacing
(`batch.concurrency.Pacer`). Both read through one `GaugeReader`, which keeps the last reading
per replica URL: a reader asks for a reading no older than `max_age_s`, so two loops sharing a
reader scrape each replica once per the shorter of their periods, not once each.

Invariants:
- A reading is `None` when the page could not be had (refused, timeout, HTTP != 200); a failed
  scrape is not cached, the next read tries again.
- Concurrent reads of one URL share one request (the first caller's), never two in flight.
- Every scrape is bounded by the reader's `timeout_s`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

_RUNNING = b"vllm:num_requests_running"
_WAITING = b"vllm:num_requests_waiting"


@dataclass(frozen=True, slots=True)
class Gauges:
    running: float
    waiting: float

    @property
    def load(self) -> float:
        """Requests the engine holds: running plus waiting."""
        return self.running + self.waiting


def parse_gauges(text: bytes) -> Gauges:
    """Sums of the running and waiting gauges in a Prometheus text page (exact names only:
    `vllm:num_requests_running_extra` is another metric); bad sample lines are skipped."""
    running = waiting = 0.0
    for line in text.splitlines():
        if not line.startswith(b"vllm:num_requests_"):
            continue
        for name, is_running in ((_RUNNING, True), (_WAITING, False)):
            if line.startswith(name) and line[len(name) : len(name) + 1] in (b"{", b" "):
                try:
                    value = float(line.rsplit(b" ", 1)[1])
                except (IndexError, ValueError):
                    continue
                if is_running:
                    running += value
                else:
                    waiting += value
    return Gauges(running, waiting)


def parse_queue_load(text: bytes) -> float:
    """Running plus waiting requests in a Prometheus text page."""
    return parse_gauges(text).load


class GaugeReader:
    """Scrapes `/metrics` of replica URLs, keeping each URL's last good reading."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._last: dict[str, tuple[float, Gauges]] = {}  # url -> (monotonic time, reading)
        self._inflight: dict[str, asyncio.Task[Gauges | None]] = {}

    async def read(self, url: str, max_age_s: float = 0.0) -> Gauges | None:
        """The gauges of the engine at `url`: the last reading if it is younger than
        `max_age_s`, else a fresh scrape (None when it failed)."""
        last = self._last.get(url)
        if last is not None and time.monotonic() - last[0] < max_age_s:
            return last[1]
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.ensure_future(self._scrape(url))
            self._inflight[url] = task
            task.add_done_callback(lambda done: self._settle(url, done))
        # Shielded: a caller cancelled while waiting leaves the scrape to those still sharing it.
        return await asyncio.shield(task)

    def _settle(self, url: str, task: asyncio.Task[Gauges | None]) -> None:
        del self._inflight[url]
        if task.cancelled() or task.exception() is not None:
            return
        reading = task.result()
        if reading is not None:
            self._last[url] = (time.monotonic(), reading)

    def forget(self, keep: set[str]) -> None:
        """Drop the readings of URLs not in `keep` (replicas that left the table)."""
        for url in [u for u in self._last if u not in keep]:
            del self._last[url]

    async def _scrape(self, url: str) -> Gauges | None:
        try:
            async with self._session.get(url + "/metrics", timeout=self._timeout) as resp:
                if resp.status != 200:
                    return None
                return parse_gauges(await resp.read())
        except (aiohttp.ClientError, TimeoutError):
            return None
