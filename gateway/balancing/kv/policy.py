"""`balancing: kv_aware`: the engine with the longest prefix of the request in its KV cache,
as its own events report it (index.py), unless it is overloaded.

1. prepare (async, once per request, before the proxy's first pick): when some candidate's
   events are followed, get the request's token ids from the least-loaded candidate's
   /tokenize (tokens.py), bounded by `kv.tokenize_timeout_s`.
2. pick: hash the tokens' full blocks as vLLM does (hashing.py; the block size and hash seed
   are the engines', learned from their events and the supervisor) and count, per candidate,
   the leading blocks its index entry holds. The deepest wins (ties: least loaded).
3. Load gate: when the winner's load (our in-flight + vLLM's running+waiting, per weight;
   load.py) exceeds the least-loaded candidate's by more than `kv.load_gate`, the least loaded.
4. No candidate holds a block (a new prefix, or one whose blocks are still being computed:
   the events arrive after the prefill), no tokens (timeout, no events for the model, a
   model's own engine): `prefix_aware`'s choice, whose table also remembers where a new
   prefix was just sent, so a burst sharing it stays together until the events confirm it.

Per request: one /tokenize call, one sha256 per block of at most `max_blocks` blocks, one
dict lookup per block and candidate.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from orchestra.config import AffinityConfig, KvAwareConfig
from orchestra.runtime import Bounded

from ...core.request_key import NO_KEY, RequestKey
from ..load import least_loaded, load_of
from ..prefix import PrefixAware
from ..replica import Replica
from .hashing import SUPPORTED_ALGOS, block_hashes
from .index import KvIndex
from .tokens import Tokenizer

MAX_BLOCKS = 4096  # hashed per request: 512k tokens at vLLM's block size 128


class KvAware:
    def __init__(
        self,
        config: KvAwareConfig,
        affinity: AffinityConfig,
        index: KvIndex,
        tokenizer: Tokenizer,
    ) -> None:
        self._config = config
        self._index = index
        self._tokenizer = tokenizer
        self.fallback = PrefixAware(affinity)
        self._counter = itertools.count()

    def bounded(self) -> Bounded:
        """The prefix table of the fallback (the KV index is the worker's, reported once)."""
        return self.fallback.bounded()

    def _followed(self, replica: Replica) -> bool:
        events = replica.kv_events
        return (
            events is not None
            and events.hash_algo in SUPPORTED_ALGOS
            and self._index.tracks(replica.url)
        )

    async def prepare(self, candidates: Sequence[Replica], key: RequestKey) -> RequestKey:
        followed = [r for r in candidates if r.healthy and self._followed(r)]
        if not followed or key.tokens is not None:
            return key
        tokens = await self._tokenizer.tokens(
            least_loaded(followed, next(self._counter)),
            key.payload,
            self._config.tokenize_timeout_s,
        )
        return key if tokens is None else dataclasses.replace(key, tokens=tuple(tokens))

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        fallback = least_loaded(candidates, next(self._counter))
        best, depth = self.deepest(candidates, key)
        if best is None or depth == 0:
            return self.fallback.pick(candidates, key)
        if load_of(best) - load_of(fallback) > self._config.load_gate:
            return fallback
        return best

    def deepest(self, candidates: Sequence[Replica], key: RequestKey) -> tuple[Replica | None, int]:
        """The candidates holding the most leading blocks of the request (least loaded of
        them) and that many blocks; (None, 0) without tokens or followed candidates."""
        if key.tokens is None:
            return None, 0
        chains: dict[tuple[int, str], list[int]] = {}
        holders: list[Replica] = []
        depth = 0
        for replica in candidates:
            size = self._index.block_size(replica.url)
            if size is None or replica.kv_events is None or not self._followed(replica):
                continue
            shape = (size, replica.kv_events.hash_seed)
            chain = chains.get(shape)
            if chain is None:
                chain = chains[shape] = block_hashes(key.tokens, size, shape[1], MAX_BLOCKS)
            held = self._index.match(replica.url, chain)
            if held > depth:
                holders, depth = [replica], held
            elif held == depth and held > 0:
                holders.append(replica)
        if not holders:
            return None, 0
        return least_loaded(holders), depth
