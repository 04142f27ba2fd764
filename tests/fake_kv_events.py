"""The fake engine's prefix cache and its KV-event publisher, speaking vLLM 0.32's wire format
(gateway/balancing/kv/wire.py documents it): a ZMQ PUB socket of (topic, seq, msgpack
KVEventBatch) and a ROUTER replay socket, started from the same `--kv-events-config` JSON vLLM
takes, so the supervisor launches the fake engine with the argv it gives vLLM.

The prompt's "tokens" are its UTF-8 bytes (chat: `role\\ncontent\\n` per message), so
`/tokenize` is exact by construction; blocks are hashed with the gateway's own vLLM-compatible
chain (the real engine's agreement with it is tested in tests/e2e). The cache holds
`--num-gpu-blocks-override` blocks (LRU): a new block evicts the oldest and publishes its
BlockRemoved, the way vLLM's block pool does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from typing import Any

import zmq
import zmq.asyncio
from aiohttp import web

from orchestra.gateway.balancing.kv.hashing import block_hashes
from orchestra.gateway.balancing.kv.wire import (
    END_SEQ,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEvent,
    KvEventBatch,
    encode_batch,
    seq_bytes,
    seq_of,
)

SEED = "vllm-none-hash"


def prompt_tokens(body: dict[str, Any]) -> list[int]:
    messages = body.get("messages")
    if isinstance(messages, list):
        text = "".join(f"{m.get('role', '')}\n{m.get('content', '')}\n" for m in messages)
    else:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        text = str(prompt)
    return list(text.encode())


def _bindable(endpoint: str) -> str:
    return endpoint.replace("*", "127.0.0.1")  # tests stay on loopback


class KvPublisher:
    def __init__(self, config_json: str, block_size: int, num_blocks: int) -> None:
        config = json.loads(config_json)
        self.endpoint, self.replay_endpoint = config["endpoint"], config.get("replay_endpoint")
        self.block_size, self.num_blocks = block_size, num_blocks
        self.cached: OrderedDict[int, None] = OrderedDict()
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=config.get("buffer_steps", 10000))
        self.seq = 0
        self.hits = self.queries = 0
        self.replays = 0  # replay requests served (a subscriber that has just synced)
        self._ctx = zmq.asyncio.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._router = self._ctx.socket(zmq.ROUTER)
        self._replayer: asyncio.Task[None] | None = None

    def install(self, app: web.Application) -> None:
        app.router.add_post("/fake/kv/clear", self.clear)
        app.router.add_get("/fake/kv/stats", self.stats)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)

    async def _start(self, app: web.Application) -> None:
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.bind(_bindable(self.endpoint))
        if self.replay_endpoint:
            self._router.setsockopt(zmq.LINGER, 0)
            self._router.bind(_bindable(self.replay_endpoint))
            self._replayer = asyncio.create_task(self._serve_replay())

    async def _stop(self, app: web.Application) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            await asyncio.gather(self._replayer, return_exceptions=True)
        self._ctx.destroy(linger=0)

    async def _serve_replay(self) -> None:
        while True:
            frames = await self._router.recv_multipart()
            if len(frames) != 3:
                continue
            client, _, start = frames
            self.replays += 1
            for seq, payload in list(self.buffer):
                if seq >= seq_of(start):
                    await self._router.send_multipart([client, b"", b"", seq_bytes(seq), payload])
            await self._router.send_multipart([client, b"", b"", END_SEQ, b""])

    def publish(self, events: list[KvEvent]) -> None:
        payload = encode_batch(KvEventBatch(ts=time.time(), events=events))
        self._pub.send_multipart([b"", seq_bytes(self.seq), payload])
        self.buffer.append((self.seq, payload))
        self.seq += 1

    def serve(self, body: dict[str, Any]) -> int:
        """Run one prompt through the cache: count its hit, store its new full blocks
        (evicting the oldest), publish what changed. Returns the cached prompt tokens."""
        tokens = prompt_tokens(body)
        chain = block_hashes(tokens, self.block_size, SEED, len(tokens))
        hit = 0
        while hit < len(chain) and chain[hit] in self.cached:
            self.cached.move_to_end(chain[hit])
            hit += 1
        self.queries += len(tokens)
        self.hits += hit * self.block_size
        new = chain[hit:]
        events: list[KvEvent] = []
        if new:
            parent = chain[hit - 1] if hit else None
            start, end = hit * self.block_size, len(chain) * self.block_size
            events.append(BlockStored(new, parent, tokens[start:end], self.block_size))
            for h in new:
                self.cached[h] = None
            evicted = []
            while len(self.cached) > self.num_blocks:
                evicted.append(self.cached.popitem(last=False)[0])
            if evicted:
                events.append(BlockRemoved(evicted))
        if events:
            self.publish(events)
        return hit * self.block_size

    def metric_lines(self, label: str) -> list[str]:
        return [
            "# TYPE vllm:prefix_cache_queries counter",
            f"vllm:prefix_cache_queries_total{label} {float(self.queries)}",
            "# TYPE vllm:prefix_cache_hits counter",
            f"vllm:prefix_cache_hits_total{label} {float(self.hits)}",
        ]

    def tokenize(self, body: dict[str, Any]) -> web.Response:
        """/tokenize as the cache sees the prompt (the engine routes it here when events are on)."""
        tokens = prompt_tokens(body)
        return web.json_response({"tokens": tokens, "count": len(tokens), "max_model_len": 0})

    async def clear(self, request: web.Request) -> web.Response:
        self.cached.clear()
        self.publish([AllBlocksCleared()])
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "seq": self.seq,
                "cached": list(self.cached),
                "hits": self.hits,
                "replays": self.replays,
            }
        )
