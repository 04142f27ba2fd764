"""Engine URL -> the block hashes it reports cached, fed by its KV events (feed.py).

Invariants:
- One writer: the engine's feed (in the worker's event loop); the policy only reads.
- An engine's entry holds exactly what its events since the last rebuild say: BlockStored adds
  (re-storing refreshes its LRU place), BlockRemoved removes, AllBlocksCleared empties it; a
  rebuild (reconnect, sequence gap, engine restart) starts from empty and replays.
- Memory: per engine at most `cap` hashes (an LRU over stores). vLLM emits a BlockRemoved for
  every block it evicts, so an engine's entry also stays at most its own KV block count
  (`num_gpu_blocks`); the cap only matters when removals were lost. ~100 bytes per hash
  (an int key in an OrderedDict), so the default cap of 262144 is ~26 MB per engine at most.
- An engine that leaves the routing table is dropped whole (`drop`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from orchestra.runtime import Bounded

from .wire import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch, as_int


class KvIndex:
    def __init__(self) -> None:
        self._blocks: dict[str, OrderedDict[int, None]] = {}
        self._caps: dict[str, int] = {}
        self._block_size: dict[str, int] = {}

    def track(self, url: str, cap: int) -> None:
        """Start an (empty) entry for an engine, bounded to `cap` hashes."""
        self._blocks[url] = OrderedDict()
        self._caps[url] = cap

    def drop(self, url: str) -> None:
        self._blocks.pop(url, None)
        self._caps.pop(url, None)
        self._block_size.pop(url, None)

    def tracks(self, url: str) -> bool:
        return url in self._blocks

    def clear(self, url: str) -> None:
        blocks = self._blocks.get(url)
        if blocks is not None:
            blocks.clear()

    def apply(self, url: str, batch: KvEventBatch) -> None:
        for event in batch.events:
            if isinstance(event, BlockStored):
                self.store(url, event.block_hashes, event.block_size)
            elif isinstance(event, BlockRemoved):
                self.remove(url, event.block_hashes)
            elif isinstance(event, AllBlocksCleared):
                self.clear(url)

    def store(self, url: str, hashes: Iterable[int | bytes], block_size: int) -> None:
        blocks = self._blocks.get(url)
        if blocks is None:
            return
        if block_size > 0:
            self._block_size[url] = block_size
        for h in hashes:
            key = as_int(h)
            blocks[key] = None
            blocks.move_to_end(key)
        cap = self._caps[url]
        while len(blocks) > cap:
            blocks.popitem(last=False)

    def remove(self, url: str, hashes: Iterable[int | bytes]) -> None:
        blocks = self._blocks.get(url)
        if blocks is not None:
            for h in hashes:
                blocks.pop(as_int(h), None)

    def bounded(self) -> Bounded:
        """Hashes held over every engine followed, against the sum of their caps."""
        return Bounded(sum(map(len, self._blocks.values())), sum(self._caps.values()))

    def block_size(self, url: str) -> int | None:
        """The engine's block size, once one of its BlockStored events said it."""
        return self._block_size.get(url)

    def size(self, url: str) -> int:
        return len(self._blocks.get(url, ()))

    def hashes(self, url: str) -> set[int]:
        return set(self._blocks.get(url, ()))

    def match(self, url: str, chain: Sequence[int]) -> int:
        """How many leading blocks of `chain` the engine holds (a cached block's prefix is
        cached too in vLLM, but we stop at the first miss like its own lookup does)."""
        blocks = self._blocks.get(url)
        if not blocks:
            return 0
        depth = 0
        for h in chain:
            if h not in blocks:
                break
            depth += 1
        return depth
