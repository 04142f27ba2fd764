"""vLLM's queue gauges, read from each engine's `/metrics`: the only scraper and parser of them.

`vllm:num_requests_running` and `vllm:num_requests_waiting` (summed over engines and labels)
steer two things: load-aware balancing (`HealthMonitor` sets `Replica.load`) and batch pacing
(`batch.concurrency.Pacer`). Both read through one `GaugeReader`, which keeps the last reading
per replica URL: a reader asks for a reading no older than `max_age_s`, so two loops sharing a
reader scrape each replica once per the shorter of their periods, not once each.

The samples are parsed by prometheus-client's own parser (as `orchestra.rates` parses the
gateway's /metrics), fed only the two gauges' sample lines (one per engine and label set). On
the whole of a vLLM page (~390 lines, 28 kB) it costs ~100x the hand-written parser it
replaced (15-26 ms against 0.15-0.2 ms, timeit on a loaded 2-core machine): a stall of the
event loop, and so of every stream it serves, per replica per scrape. On the selected lines
it costs what the hand-written parser did.

Invariants:
- A reading is `None` when the page could not be had (refused, timeout, HTTP != 200); a failed
  scrape is not cached, the next read tries again.
- Concurrent reads of one URL share one request (the first caller's), never two in flight.
- Every scrape is bounded by the reader's `timeout_s`.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from .http1.pool import Pool

_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
# The two gauges' sample lines (a line starts after "\n": the page gets one in front), the
# only ones handed to the parser (its cost: the module's docstring).
_SAMPLES = re.compile(rb"\n(vllm:num_requests_(?:running|waiting)[{ ][^\n]*)")


@dataclass(frozen=True, slots=True)
class Gauges:
    running: float
    waiting: float

    @property
    def load(self) -> float:
        """Requests the engine holds: running plus waiting."""
        return self.running + self.waiting


def parse_gauges(text: bytes) -> Gauges:
    """Sums of the running and waiting gauges (over engines and labels) in a Prometheus text
    page; exact names only (`vllm:num_requests_running_extra` is another metric). A sample
    line the parser rejects is skipped, the others still count."""
    running = waiting = 0.0
    for line in _SAMPLES.findall(b"\n" + text):
        try:
            families = list(text_string_to_metric_families(line.decode("utf-8")))
        except (ValueError, UnicodeDecodeError):
            continue
        for family in families:
            for sample in family.samples:
                if sample.name == _RUNNING:
                    running += sample.value
                elif sample.name == _WAITING:
                    waiting += sample.value
    return Gauges(running, waiting)


def parse_queue_load(text: bytes) -> float:
    """Running plus waiting requests in a Prometheus text page."""
    return parse_gauges(text).load


class GaugeReader:
    """Scrapes `/metrics` of replica URLs, keeping each URL's last good reading."""

    def __init__(self, pool: Pool, timeout_s: float) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
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
            reply = await self._pool.fetch(url, "GET", "/metrics", {}, b"", self._timeout_s)
            return parse_gauges(reply.body) if reply.status == 200 else None
        except OSError:  # refused, lost, timed out (TimeoutError is one)
            return None
