"""A request's block hashes, computed the way vLLM's prefix cache does (vLLM 0.32,
vllm/v1/core/kv_cache_utils.py `hash_block_tokens`, vllm/utils/hashing.py `sha256`).

For full blocks of `block_size` tokens: h[0] = H((NONE_HASH, tokens[0:B], None)),
h[i] = H((h[i-1], tokens[i*B:(i+1)*B], None)) with H = sha256 of the pickled tuple (highest
protocol; token ids as a tuple) and NONE_HASH = H(seed), the seed being PYTHONHASHSEED when
the engine has it, else "vllm-none-hash". The chain carries the full digests; what the events
publish, and what we compare, is each digest's low 64 bits (`wire.as_int`). A partial last
block is not hashed (vLLM caches full blocks only). Extra keys (LoRA, multimodal,
cache_salt) are not modelled: such requests still hash, and simply find no match.

Cost: one pickle + sha256 per block: 50 µs for a 1218-token chat (9 blocks of 128) here.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from functools import lru_cache

from .wire import as_int

SUPPORTED_ALGOS = frozenset({"sha256"})


def _sha256(obj: object) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


@lru_cache(maxsize=16)
def none_hash(seed: str) -> bytes:
    return _sha256(seed)


def block_hashes(tokens: Sequence[int], block_size: int, seed: str, limit: int) -> list[int]:
    """The published (int) hashes of the first `limit` full blocks of `tokens`."""
    out: list[int] = []
    parent = none_hash(seed)
    full = min(len(tokens) // block_size, limit) if block_size > 0 else 0
    for i in range(full):
        parent = _sha256((parent, tuple(tokens[i * block_size : (i + 1) * block_size]), None))
        out.append(as_int(parent))
    return out
