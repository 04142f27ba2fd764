"""The soak's traffic (`bench/soak.py`): a fixed mix of every workload the gateway serves,
with a fresh id in everything a client chooses, sent by a few looping workers, plus a batch and
a model swap now and then.

The mix: chats with a fresh prefix (prefix_aware), chats with a fresh session id (session),
chats with a fresh prompt on engines publishing KV events (kv_aware), streams read whole and
streams the client drops after the first chunk, embeddings, audio uploads, Responses created and
followed up with `previous_response_id`, an ensemble, the managed model (held while it swaps),
a rate-limited key (429s) and a wrong key (401s). Every request carries an API key.
`Traffic.pause()` stops new requests and waits for those in flight (the quiet samples).
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

REQUEST_TIMEOUT_S = 60.0  # a request held through a swap waits for it (seconds, not minutes)


@dataclass(frozen=True)
class Names:
    """The models of the soak's stack, and the keys clients use."""

    prefix: str = "chat"  # prefix_aware over two static replicas
    session: str = "sess"  # session over the same two
    kv: str = "kv"  # kv_aware over two engines publishing KV events
    ensemble: str = "ens"
    managed: str = "swap-a"  # the supervisor's; `swap-b` takes its one slot now and then
    other: str = "swap-b"
    key: str = "sk-soak-main"
    limited_key: str = "sk-soak-limited"  # a small requests_per_minute: some 429s


def _text(words: int) -> str:
    return " ".join(uuid.uuid4().hex[:8] for _ in range(words))


def _chat(model: str, prompt: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


class Traffic:
    def __init__(self, url: str, names: Names, workers: int, seed: int = 31) -> None:
        self.url = url
        self.names = names
        self.workers = workers
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._rng = random.Random(seed)
        self._open = asyncio.Event()
        self._open.set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._mix: list[tuple[Callable[[aiohttp.ClientSession], Awaitable[str]], int]] = [
            (self.prefix_chat, 20),
            (self.session_chat, 10),
            (self.kv_chat, 8),
            (self.stream_whole, 8),
            (self.stream_dropped, 8),
            (self.embeddings, 8),
            (self.audio, 5),
            (self.responses, 8),
            (self.ensemble, 4),
            (self.managed, 8),
            (self.limited, 3),
            (self.wrong_key, 1),
        ]

    def _headers(self, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.names.key}"}

    # ---- the loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(self._worker(http, stop) for _ in range(self.workers)))

    async def _worker(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        kinds, weights = zip(*self._mix, strict=True)
        while not stop.is_set():
            await self._open.wait()
            send = self._rng.choices(kinds, weights)[0]
            self._inflight += 1
            self._idle.clear()
            try:
                outcome = await send(http)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = f"client error {type(exc).__name__}"
            finally:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.set()
            self.outcomes[f"{send.__name__} {outcome}"] += 1

    async def pause(self) -> None:
        """No new request until `resume`; returns once none is in flight."""
        self._open.clear()
        await self._idle.wait()

    def resume(self) -> None:
        self._open.set()

    # ---- one request of each kind (each returns its outcome: the status, or what failed) -----
    async def _post(self, http: aiohttp.ClientSession, path: str, body: object) -> str:
        async with http.post(self.url + path, json=body, headers=self._headers()) as r:
            await r.read()
            return str(r.status)

    async def prefix_chat(self, http: aiohttp.ClientSession) -> str:
        return await self._post(
            http, "/v1/chat/completions", _chat(self.names.prefix, _text(60), max_tokens=4)
        )

    async def session_chat(self, http: aiohttp.ClientSession) -> str:
        body = _chat(self.names.session, _text(8), max_tokens=4)
        headers = {**self._headers(), "x-session-id": uuid.uuid4().hex}
        async with http.post(self.url + "/v1/chat/completions", json=body, headers=headers) as r:
            await r.read()
            return str(r.status)

    async def kv_chat(self, http: aiohttp.ClientSession) -> str:
        return await self._post(
            http, "/v1/chat/completions", _chat(self.names.kv, _text(12), max_tokens=2)
        )

    async def stream_whole(self, http: aiohttp.ClientSession) -> str:
        body = _chat(self.names.prefix, _text(6), max_tokens=24, stream=True)
        async with http.post(
            self.url + "/v1/chat/completions", json=body, headers=self._headers()
        ) as r:
            text = await r.read()
        if r.status == 200 and not text.rstrip().endswith(b"data: [DONE]"):
            return "200 unfinished"
        return str(r.status)

    async def stream_dropped(self, http: aiohttp.ClientSession) -> str:
        """The client leaves after the first chunk: the gateway must let go of everything."""
        body = _chat(self.names.session, _text(6), max_tokens=64, stream=True)
        async with http.post(
            self.url + "/v1/chat/completions", json=body, headers=self._headers()
        ) as r:
            if r.status == 200:
                await r.content.readany()
                r.close()  # drops the connection mid-stream
        return str(r.status)

    async def embeddings(self, http: aiohttp.ClientSession) -> str:
        body = {"model": self.names.prefix, "input": [_text(5), _text(5)]}
        return await self._post(http, "/v1/embeddings", body)

    async def audio(self, http: aiohttp.ClientSession) -> str:
        form = aiohttp.FormData()
        form.add_field("model", self.names.prefix)
        form.add_field("file", io.BytesIO(self._rng.randbytes(20_000)), filename="a.wav")
        async with http.post(
            self.url + "/v1/audio/transcriptions", data=form, headers=self._headers()
        ) as r:
            await r.read()
            return str(r.status)

    async def responses(self, http: aiohttp.ClientSession) -> str:
        """One stored response, then a follow-up naming it (pinned to its engine)."""
        body = {"model": self.names.prefix, "input": _text(5), "max_output_tokens": 4}
        async with http.post(self.url + "/v1/responses", json=body, headers=self._headers()) as r:
            first = await r.read()
        if r.status != 200:
            return f"{r.status} first"
        follow = {**body, "previous_response_id": json.loads(first)["id"]}
        return await self._post(http, "/v1/responses", follow)

    async def ensemble(self, http: aiohttp.ClientSession) -> str:
        return await self._post(
            http, "/v1/chat/completions", _chat(self.names.ensemble, _text(6), max_tokens=4)
        )

    async def managed(self, http: aiohttp.ClientSession) -> str:
        return await self._post(
            http, "/v1/chat/completions", _chat(self.names.managed, _text(6), max_tokens=4)
        )

    async def limited(self, http: aiohttp.ClientSession) -> str:
        body = _chat(self.names.prefix, _text(4), max_tokens=2)
        headers = self._headers(self.names.limited_key)
        async with http.post(self.url + "/v1/chat/completions", json=body, headers=headers) as r:
            await r.read()
            return str(r.status)

    async def wrong_key(self, http: aiohttp.ClientSession) -> str:
        body = _chat(self.names.prefix, _text(4), max_tokens=2)
        headers = self._headers("sk-" + uuid.uuid4().hex)
        async with http.post(self.url + "/v1/chat/completions", json=body, headers=headers) as r:
            await r.read()
            return str(r.status)
