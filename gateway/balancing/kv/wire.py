"""vLLM's KV-cache event wire format (vllm/distributed/kv_events.py, vLLM 0.32), decoded.

Each message on the PUB socket is three frames: topic (bytes, "" by default), the sequence
number (8 bytes, big-endian, counting from 0 per publisher process) and a msgpack
`KVEventBatch`: an array `[ts, events, data_parallel_rank?]`, each event a map tagged by
`"type"`: `BlockStored` (block_hashes, parent_block_hash, token_ids, block_size, ...),
`BlockRemoved` (block_hashes, ...) or `AllBlocksCleared`. Hashes are 64-bit ints by default
(VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES) or the digest's bytes; both are read as the int vLLM
would publish. Fields we do not use are ignored, so newer publishers still decode.

The replay socket (ROUTER) takes `[b"", start_seq]` from a DEALER and answers with
`[b"", topic, seq, payload]` for every buffered batch from `start_seq`, then
`[b"", b"", END_SEQ, b""]` where END_SEQ is -1 as 8 signed big-endian bytes.
"""

from __future__ import annotations

import msgspec

BlockHash = int | bytes
END_SEQ = (-1).to_bytes(8, "big", signed=True)
_MASK = (1 << 64) - 1


class BlockStored(msgspec.Struct, tag=True):
    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None = None
    token_ids: list[int] = []
    block_size: int = 0
    lora_name: str | None = None
    medium: str | None = None


class BlockRemoved(msgspec.Struct, tag=True):
    block_hashes: list[BlockHash]
    medium: str | None = None


class AllBlocksCleared(msgspec.Struct, tag=True):
    pass


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


class KvEventBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[KvEvent]
    data_parallel_rank: int | None = None


_decoder = msgspec.msgpack.Decoder(KvEventBatch)
_encoder = msgspec.msgpack.Encoder()


def decode_batch(payload: bytes) -> KvEventBatch:
    """One batch; raises msgspec.DecodeError / ValidationError on a malformed payload."""
    return _decoder.decode(payload)


def encode_batch(batch: KvEventBatch) -> bytes:
    """The same format vLLM publishes (the fake engine's publisher and tests use it)."""
    return _encoder.encode(batch)


def seq_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big", signed=True)


def seq_of(frame: bytes) -> int:
    return int.from_bytes(frame, "big", signed=True)


def as_int(block_hash: BlockHash) -> int:
    """The hash as vLLM publishes it by default: the digest's low 64 bits, big-endian."""
    if isinstance(block_hash, bytes):
        return int.from_bytes(block_hash, "big") & _MASK
    return block_hash & _MASK
