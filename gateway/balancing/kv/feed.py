"""One ZMQ subscription per engine, feeding `index.KvIndex`; `KvFeeds` keeps one per engine
of the kv_aware models' upstreams, per gateway worker.

Invariants (one engine's feed):
- The index entry is rebuilt from the replay socket (from seq 0: the engine's whole replay
  buffer, vLLM's `buffer_steps`, 10000 batches by default) on every (re)connect of the SUB
  socket, seen on the socket's monitor: a first connect, a network blip and an engine restart
  (a new publisher whose sequence starts at 0 again) all look the same and end the same way.
  A disconnect empties the entry: the engine may be gone, and its cache with it.
- Live batches are applied in sequence order: a batch at or below the last applied one is a
  duplicate of the replay and skipped; a gap (lost batches: the SUB high-water mark, a slow
  joiner) triggers a rebuild. Without a replay socket, or when it does not answer within
  `replay_timeout_s`, the next live batch is the new baseline (the entry may then lack blocks
  stored before: fewer matches, never wrong ones beyond what later removals fix).
- Every worker (and every gateway) subscribes on its own; they agree because they apply the
  same batches in the same order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec
import zmq
import zmq.asyncio
from prometheus_client import Gauge
from zmq.utils.monitor import parse_monitor_message

from orchestra.config import KvAwareConfig
from orchestra.loops import every, run_forever
from orchestra.protocol import KvEvents

from .index import KvIndex
from .wire import END_SEQ, decode_batch, seq_bytes, seq_of

log = logging.getLogger(__name__)
_RESTART_DELAY_S = 1.0  # a feed that failed (bad endpoint, socket error) starts again


class EngineFeed:
    """One engine's events into its index entry. Owns its sockets and its `last` sequence."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        url: str,
        events: KvEvents,
        index: KvIndex,
        replay_timeout_s: float,
    ) -> None:
        self._ctx, self.url, self._events, self._index = ctx, url, events, index
        self._replay_timeout_s = replay_timeout_s
        self.last: int | None = None  # the last sequence number applied; None = no baseline
        self.rebuilds = 0

    async def run(self) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        monitor = sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        sub.connect(self._events.publisher)
        poller = zmq.asyncio.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while True:
                ready = dict(await poller.poll())
                if monitor in ready:
                    event = parse_monitor_message(await monitor.recv_multipart())
                    if event["event"] == zmq.EVENT_CONNECTED:
                        await self.rebuild()
                    elif event["event"] == zmq.EVENT_DISCONNECTED:
                        self._index.clear(self.url)
                        self.last = None
                if sub in ready:
                    await self._live(await sub.recv_multipart())
        finally:
            sub.disable_monitor()
            monitor.close(linger=0)
            sub.close(linger=0)

    async def _live(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            return
        seq = seq_of(frames[1])
        if self.last is not None and seq <= self.last:
            return  # already applied from the replay
        if self.last is not None and seq != self.last + 1:
            log.info("kv events of %s: gap after %d (got %d); rebuilding", self.url, self.last, seq)
            await self.rebuild()
            if self.last is not None and seq <= self.last:
                return
        if self._apply(frames[2]):
            self.last = seq

    def _apply(self, payload: bytes) -> bool:
        try:
            batch = decode_batch(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("kv events of %s: undecodable batch skipped", self.url)
            return False
        self._index.apply(self.url, batch)
        return True

    async def rebuild(self) -> None:
        """Empty the entry and replay the engine's buffer into it."""
        self.rebuilds += 1
        self._index.clear(self.url)
        self.last = None
        if self._events.replay is None:
            return
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self._events.replay)
        try:
            await dealer.send_multipart([b"", seq_bytes(0)])
            async with asyncio.timeout(self._replay_timeout_s):
                while True:
                    frames = await dealer.recv_multipart()
                    if len(frames) != 4 or frames[2] == END_SEQ:
                        break
                    if self._apply(frames[3]):
                        self.last = seq_of(frames[2])
        except TimeoutError:
            log.warning("kv events of %s: replay timed out; live events only", self.url)
        finally:
            dealer.close(linger=0)


@dataclass(frozen=True)
class Wanted:
    """One engine to follow: its endpoints and its model's kv_aware knobs."""

    events: KvEvents
    config: KvAwareConfig


class KvFeeds:
    """Keeps one `EngineFeed` per wanted engine (`wanted()`: the kv_aware models' upstreams),
    checked every `interval_s`: a new engine is tracked and followed, one that left (drained,
    swapped out, stopped) is unfollowed and dropped from the index. Stopping `run` stops all."""

    def __init__(
        self,
        index: KvIndex,
        wanted: Callable[[], Mapping[str, Wanted]],
        interval_s: float,
        blocks: Gauge,
    ) -> None:
        self.index = index
        self._wanted = wanted
        self._interval_s = interval_s
        # orchestra_kv_index_blocks{upstream}: each followed engine's entry size, set every
        # round (not per event: the hot path of the feed stays a dict update); 0 once dropped
        # (a multiprocess gauge keeps a label it was given, so it is zeroed, not removed).
        self.blocks = blocks
        self.feeds: dict[str, tuple[Wanted, EngineFeed, asyncio.Task[None]]] = {}

    async def run(self) -> None:
        ctx = zmq.asyncio.Context()

        async def step() -> None:
            self.reconcile(ctx)

        try:
            await every("kv-events subscriptions", self._interval_s, step, first_after_s=0)
        finally:
            await self._stop(list(self.feeds))
            ctx.destroy(linger=0)  # closes any socket a cancelled feed left

    def reconcile(self, ctx: zmq.asyncio.Context) -> None:
        wanted = self._wanted()
        gone = [url for url, (w, _, _) in self.feeds.items() if wanted.get(url) != w]
        for url in gone:
            _, _, task = self.feeds.pop(url)
            task.cancel()
            self._drop(url)
        for url, want in wanted.items():
            if url in self.feeds:
                continue
            self.index.track(url, want.config.max_blocks_per_engine)
            feed = EngineFeed(ctx, url, want.events, self.index, want.config.replay_timeout_s)
            name = f"kv-events {url}"
            task = asyncio.create_task(run_forever(name, feed.run, _RESTART_DELAY_S), name=name)
            self.feeds[url] = (want, feed, task)
        for url in self.feeds:
            self.blocks.labels(url).set(self.index.size(url))

    def _drop(self, url: str) -> None:
        self.index.drop(url)
        self.blocks.labels(url).set(0)

    async def _stop(self, urls: list[str]) -> None:
        tasks = []
        for url in urls:
            _, _, task = self.feeds.pop(url)
            task.cancel()
            tasks.append(task)
            self._drop(url)
        await asyncio.gather(*tasks, return_exceptions=True)
