"""The usage ledger: per key x model x UTC hour, requests, errors, tokens (prompt, completion,
cached) and cost, counted in memory on the request path and added to the database by one
writer task (`run`), off the request path.

Invariants:
- The request path only adds to a dict (no I/O, no await): `answer` and `tokens`.
- What waits for the database is bounded: at most `max_pending_rows` (key, model, hour) rows.
  A count for a new row past that is dropped and counted in `orchestra_usage_dropped_total`
  (a row already waiting still takes every count).
- A write that failed is put back (within the bound) and tried again at the next flush; the
  database only ever adds (`UsageStore.add`), so several workers and a restart stay correct.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from prometheus_client import Counter

from orchestra.config import Price, UsageConfig

from ..metrics import GatewayMetrics
from .store import UsageStore
from .tokens import Tokens

log = logging.getLogger(__name__)

ANONYMOUS = "-"  # the key name of calls made without one (a gateway without api_keys)
OTHER_KEYS = "_other"  # the metric's label past `max_key_labels` keys

Row = tuple[str, str, int]  # key name, model, epoch seconds of the UTC hour


class Ledger:
    def __init__(
        self,
        store: UsageStore,
        config: UsageConfig,
        pricing: Mapping[str, Price],
        metrics: GatewayMetrics,
    ) -> None:
        self._store = store
        self._config = config
        self._pricing = pricing
        self._metrics = metrics
        self._pending: dict[Row, dict[str, float]] = {}
        self._labels: set[str] = set()  # keys with their own metric label
        self._children: dict[tuple[str, str], Counter] = {}
        self._failing = False
        # One flush at a time: a reader's flush (`/admin/usage`) waits for the writer's one in
        # flight, so what it reads next includes every count taken before it asked.
        self._flushing = asyncio.Lock()

    def price(self, model: str) -> Price | None:
        return self._pricing.get(model)

    def cost(self, model: str, tokens: Tokens) -> float:
        price = self._pricing.get(model)
        return 0.0 if price is None else price.cost(tokens.prompt, tokens.completion)

    def answer(self, key: str, model: str, status: int) -> None:
        """One answer to `key`'s call of `model` (an error when `status` >= 400)."""
        counts = self._row(key, model)
        if counts is not None:
            counts["requests"] = counts.get("requests", 0) + 1
            if status >= 400:
                counts["errors"] = counts.get("errors", 0) + 1

    def tokens(self, key: str, model: str, tokens: Tokens) -> float:
        """`tokens` used by `key` on `model`; returns their cost."""
        cost = self.cost(model, tokens)
        label = self._label(key)
        for kind, n in (
            ("prompt", tokens.prompt),
            ("completion", tokens.completion),
            ("cached", tokens.cached),
        ):
            if n:
                self._counter(label, kind).inc(n)
        counts = self._row(key, model)
        if counts is not None:
            named: tuple[tuple[str, float], ...] = (
                ("prompt_tokens", tokens.prompt),
                ("completion_tokens", tokens.completion),
                ("cached_tokens", tokens.cached),
                ("cost", cost),
            )
            for name, value in named:
                counts[name] = counts.get(name, 0) + value
        return cost

    def _row(self, key: str, model: str) -> dict[str, float] | None:
        now = int(time.time())
        row = (key, model, now - now % 3600)
        counts = self._pending.get(row)
        if counts is None:
            if len(self._pending) >= self._config.max_pending_rows:
                self._metrics.usage_dropped.inc()
                return None
            counts = self._pending[row] = {}
        return counts

    def _counter(self, label: str, kind: str) -> Counter:
        # `labels()` costs a lock and a tuple hash per call: each child is looked up once
        child = self._children.get((label, kind))
        if child is None:
            child = self._children[label, kind] = self._metrics.key_tokens.labels(label, kind)
        return child

    def _label(self, key: str) -> str:
        if key in self._labels:
            return key
        if len(self._labels) >= self._config.max_key_labels:
            return OTHER_KEYS
        self._labels.add(key)
        return key

    async def run(self) -> None:
        """The one writer: adds what was counted every `flush_s`. Runs until cancelled."""
        while True:
            await asyncio.sleep(self._config.flush_s)
            await self.flush()

    async def flush(self) -> None:
        """Add the counts waiting to the database (put back if it fails)."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        rows = dict(self._pending)
        self._pending.clear()
        if not rows:
            return
        try:
            await asyncio.to_thread(self._store.add, rows)
        except Exception as exc:  # the database away: keep the counts for the next flush
            if not self._failing:
                log.warning("usage ledger: the database write failed (%r); will retry", exc)
            self._failing = True
            self._put_back(rows)
            return
        if self._failing:
            log.info("usage ledger: the database takes writes again")
        self._failing = False

    def _put_back(self, rows: dict[Row, dict[str, float]]) -> None:
        for row, counts in rows.items():
            into = self._pending.get(row)
            if into is None:
                if len(self._pending) >= self._config.max_pending_rows:
                    self._metrics.usage_dropped.inc()
                    continue
                into = self._pending[row] = {}
            for name, value in counts.items():
                into[name] = into.get(name, 0) + value
