"""`balancing: prefix_aware`: send a prompt where its leading blocks were sent before.

vLLM's automatic prefix caching keeps the KV cache of prompt blocks it has computed; a request
that shares a long prefix with an earlier one (system prompt, few-shot block, chat history)
skips that part of the prefill, but only on the replica that saw it.

Algorithm (after vLLM production-stack's HashTrie and AIBrix's prefix-cache router):
1. Render the prompt as text: chat `messages` as `role\\ncontent\\n` lines (text parts of
   multi-part contents, `tools` first when given); completions' `prompt` as is.
2. Cut the first `max_blocks * block_chars` characters into full blocks of `block_chars` (a
   partial last block is not hashed: vLLM caches full blocks only) and hash them as a chain,
   h[i] = hash((h[i-1], block[i])), so h[i] names the whole prefix up to block i.
3. Look the chain up in an LRU table h -> {replica urls}; the match length of a replica is the
   number of leading blocks it holds. The candidate with the longest match wins (ties: least
   loaded).
4. Load gate: if the winner's load (our in-flight + vLLM's running+waiting, per weight) exceeds
   the least-loaded candidate's by more than `load_gate`, or nothing matched, take the least
   loaded candidate instead.
5. Record every block of the chain for the chosen replica (it will have them cached once the
   request has run).

Bounds: per request O(max_blocks) hashing and lookups on at most max_blocks*block_chars
characters; memory at most `table_size` entries, each a set of at most #replicas urls.
State is per gateway process (each worker learns on its own).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from orchestra.config import AffinityConfig
from orchestra.runtime import Bounded

from ..core.request_key import NO_KEY, RequestKey
from .load import least_loaded, load_of
from .replica import Replica


def render_prompt(payload: dict[str, Any], limit: int) -> str:
    """The leading `limit` characters of the prompt as the engine will see it, roughly."""
    messages = payload.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        tools = payload.get("tools")
        if tools:
            parts.append(repr(tools))
            size += len(parts[-1])
        for message in messages:
            if size >= limit:
                break
            if not isinstance(message, dict):
                continue
            text = f"{message.get('role', '')}\n{_content_text(message.get('content'))}\n"
            parts.append(text)
            size += len(text)
        return "".join(parts)[:limit]
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) for t in prompt[: limit // 4]):
            return " ".join(map(str, prompt[: limit // 4]))[:limit]  # token ids
        prompt = prompt[0]  # a batch: the first prompt decides
    return prompt[:limit] if isinstance(prompt, str) else ""


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or part.get("image_url") or "")
            for part in content
            if isinstance(part, dict)
        )
    return ""


def block_chain(text: str, block_chars: int) -> list[int]:
    """Chained hashes of the full blocks of `text` (h[i] depends on every block up to i)."""
    chain: list[int] = []
    h = 0
    for start in range(0, len(text) - block_chars + 1, block_chars):
        h = hash((h, text[start : start + block_chars]))
        chain.append(h)
    return chain


class PrefixAware:
    def __init__(self, config: AffinityConfig) -> None:
        self.block_chars = config.block_chars
        self.max_chars = config.block_chars * config.max_blocks
        self.table_size = config.table_size
        self.load_gate = config.load_gate
        self._table: OrderedDict[int, set[str]] = OrderedDict()
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._table)

    def bounded(self) -> Bounded:
        return Bounded(len(self._table), self.table_size)

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        chain = block_chain(render_prompt(key.payload, self.max_chars), self.block_chars)
        fallback = least_loaded(candidates, next(self._counter))
        chosen = self._longest_match(candidates, chain)
        if chosen is None or load_of(chosen) - load_of(fallback) > self.load_gate:
            chosen = fallback
        self._remember(chain, chosen.url)
        return chosen

    def match_length(self, chain: Sequence[int], url: str) -> int:
        """How many leading blocks of `chain` are recorded for `url`."""
        depth = 0
        for h in chain:
            owners = self._table.get(h)
            if owners is None or url not in owners:
                break
            depth += 1
        return depth

    def _longest_match(self, candidates: Sequence[Replica], chain: list[int]) -> Replica | None:
        holders: Sequence[Replica] = candidates
        depth = 0
        for h in chain:
            owners = self._table.get(h)
            if owners is None:
                break
            deeper = [r for r in holders if r.url in owners]
            if not deeper:
                break
            holders, depth = deeper, depth + 1
        if depth == 0:
            return None
        return least_loaded(holders)

    def _remember(self, chain: list[int], url: str) -> None:
        # Deepest block first, so the chain's head is the most recent: the LRU drops a chain
        # from its tail, the way the engine's own cache evicts.
        table = self._table
        for h in reversed(chain):
            owners = table.get(h)
            if owners is None:
                table[h] = {url}
            else:
                owners.add(url)
                table.move_to_end(h)
        while len(table) > self.table_size:
            table.popitem(last=False)
