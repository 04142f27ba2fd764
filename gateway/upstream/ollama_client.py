"""The Ollama backend (`backend.Backend`): health-checked, called with the model mapped,
OpenAI out.

The last target of a chain one of whose models `fallback.ollama.models` maps (the first such,
`pipeline/aliases.py`), on the paths whose traits name an Ollama path, while its probe says it is up
(`takes`). A failure before the first byte raises `Unavailable` (the chain's rule: the next
target, here none, so that is the answer); after it, the stream ends with one error event, as
for the engines.

Calls go through the gateway's one client for engines (`http1.Pool`): connecting is bounded by
the pool's `gateway.timeouts.connect_s`, the first byte by `first_byte_timeout_s`, each line
of a stream by `idle_read_timeout_s`, the whole call by `timeout_s`, a probe by
`connect_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import orjson

from orchestra.config import OllamaFallback
from orchestra.protocol import error_json

from ..core.call import REPLICA, Call
from ..core.errors import Unavailable, UpstreamError
from ..core.reply import JSON, SSE, IterStream, Reply
from ..metrics import GatewayMetrics
from . import ollama
from .backend import BACKEND_HEADER
from .http1.pool import Pool
from .http1.protocol import Connection

log = logging.getLogger(__name__)

_MAX_LINE = 1 << 20  # an NDJSON line longer than this is not Ollama's: the stream fails


class _Lines:
    """One leased connection's reply body, read as NDJSON lines (each with its b"\n", the
    last one without when the body ends without one, then b""). The lease is settled once:
    `release` or `close`, whichever comes first (a released connection may already serve
    another request: closing it then would cut that one)."""

    __slots__ = ("_rest", "conn", "settled")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.settled = False
        self._rest = b""

    async def readline(self) -> bytes:
        while True:
            end = self._rest.find(b"\n") + 1
            if end:
                line, self._rest = self._rest[:end], self._rest[end:]
                return line
            if len(self._rest) > _MAX_LINE:
                raise ValueError(f"a line longer than {_MAX_LINE} bytes")
            data = await self.conn.read()
            if not data:
                line, self._rest = self._rest, b""
                return line
            self._rest += data

    def release(self) -> None:
        if not self.settled:
            self.settled = True
            self.conn.release()

    def close(self) -> None:
        if not self.settled:
            self.settled = True
            self.conn.close()


class OllamaClient:
    name = "ollama"  # its replies' x-orchestra-backend

    def __init__(self, config: OllamaFallback, pool: Pool, metrics: GatewayMetrics) -> None:
        self.config = config
        self.url = config.url
        parts = urlsplit(config.url)
        self._address = parts.netloc  # the x-orchestra-replica value
        self._upstream = f"{parts.scheme}://{parts.netloc}"  # the pool's key
        self._prefix = parts.path.rstrip("/")  # a path in the URL goes before the API's paths
        self.healthy = True  # optimistic until the first probe says otherwise
        self._pool = pool
        self._metrics = metrics

    def covers(self, model: str) -> bool:
        return model in self.config.models

    def takes(self, call: Call) -> bool:
        return self.healthy and call.traits.ollama is not None and self.covers(call.model)

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.config.health_check_interval_s)

    async def check_once(self) -> bool:
        try:
            status, _, body = await self._pool.fetch(
                self._upstream,
                "GET",
                self._prefix + "/api/version",
                {},
                b"",
                self.config.connect_timeout_s,
            )
            ok = status == 200 and "version" in orjson.loads(body)
        except (OSError, ValueError, TypeError):  # OSError: TimeoutError too; ValueError: JSON
            ok = False
        self._set_health(ok)
        return ok

    def _set_health(self, ok: bool) -> None:
        if ok != self.healthy:
            log.warning("ollama fallback at %s is %s", self.url, "up" if ok else "down")
        self.healthy = ok
        self._metrics.upstream_healthy.labels("_fallback", self.url).set(1 if ok else 0)

    async def forward(self, call: Call) -> Reply:
        """Serve `call` from Ollama; `Unavailable` when Ollama failed before answering."""
        payload = call.payload
        tag = self.config.models[call.model]
        body = ollama.to_ollama(call.path, payload, tag)
        api_path = call.traits.ollama
        assert api_path is not None  # `takes` such calls only
        stream = bool(body.get("stream"))
        config = self.config
        deadline = asyncio.get_running_loop().time() + config.timeout_s
        upstream: _Lines | None = None
        handed_over = False
        try:
            async with asyncio.timeout(min(config.first_byte_timeout_s, config.timeout_s)):
                upstream = _Lines(
                    await self._pool.request(
                        self._upstream,
                        "POST",
                        self._prefix + api_path,
                        {"content-type": "application/json"},
                        orjson.dumps(body),
                    )
                )
                status = upstream.conn.status
                relay = stream and status == 200
                first = await (upstream.readline() if relay else upstream.conn.read_all())
        except (OSError, ValueError) as exc:  # OSError: TimeoutError too
            log.warning("ollama fallback failed before answering: %r", exc)
            self._set_health(False)
            if upstream is not None:
                upstream.close()
            raise Unavailable(f"fallback backend failed: {exc.__class__.__name__}") from None
        except BaseException:  # cancelled: the lease must not outlive the call
            if upstream is not None:
                upstream.close()
            raise
        try:
            headers = {**call.reply_headers, BACKEND_HEADER: self.name, REPLICA: self._address}
            if status != 200:
                return self._error_reply(status, first, headers)
            if stream and first.lstrip().startswith(b'{"error"'):
                return self._error_reply(502, first, headers)
            if stream:
                include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
                translator = ollama.StreamTranslator(call.path, call.model, include_usage)
                handed_over = True
                relayed = self._relay(call, upstream, first, translator, deadline)
                served = Reply(IterStream(relayed), 200, headers, SSE)
                # A body generator never started (the client left before) runs no `finally`:
                # the connection is closed when the reply closes (nothing once released).
                served.on_close(upstream.close)
                return served
            try:
                line = orjson.loads(first)
            except orjson.JSONDecodeError:
                line = None
            if not isinstance(line, dict) or "error" in line:
                detail = line.get("error") if isinstance(line, dict) else "malformed JSON"
                error = UpstreamError(f"fallback backend error: {detail}")
                return Reply(error.body(), 502, headers, JSON)
            out = ollama.from_ollama(call.path, line, call.model)
            call.usage(self._metrics, out.get("usage"))
            return Reply(orjson.dumps(out), 200, headers, JSON)
        finally:
            if not handed_over:
                upstream.release()  # closes it unless the reply was read to its clean end

    @staticmethod
    def _error_reply(status: int, raw: bytes, headers: dict[str, str]) -> Reply:
        try:
            detail = orjson.loads(raw).get("error", "")
        except (orjson.JSONDecodeError, AttributeError):
            detail = raw[:200].decode("utf-8", "replace")
        client_error = 400 <= status < 500 and status != 404  # 404 = our model map is wrong
        out_status = status if client_error else 502
        type_ = "invalid_request_error" if client_error else "upstream_error"
        body = error_json(f"fallback backend answered {status}: {detail}", type_, out_status)
        return Reply(body, out_status, headers, JSON)

    async def _relay(
        self,
        call: Call,
        upstream: _Lines,
        first: bytes,
        translator: ollama.StreamTranslator,
        deadline: float,
    ) -> AsyncIterator[bytes]:
        """`deadline`: loop time by which the whole call ends (`timeout_s`)."""
        idle = self.config.idle_read_timeout_s
        loop = asyncio.get_running_loop()
        problem = ""
        try:
            out = translator.feed(first)
            if out:
                yield out
            while not translator.done:
                left = deadline - loop.time()
                try:
                    async with asyncio.timeout(min(idle, left)):
                        line = await upstream.readline()
                except TimeoutError:
                    problem = (
                        f"fallback backend sent nothing for {idle:g}s"
                        if idle < left
                        else f"fallback backend took over {self.config.timeout_s:g}s"
                    )
                    break
                if not line:
                    problem = "fallback backend closed the stream before done"
                    break
                out = translator.feed(line)
                if out:
                    yield out
        except (OSError, ValueError) as exc:
            problem = f"fallback backend connection lost mid-stream: {exc.__class__.__name__}"
        finally:
            if translator.done and not problem:
                upstream.release()
            else:
                upstream.close()
            call.usage(self._metrics, translator.usage)
        if problem:
            self._metrics.stream_errors.labels(call.model).inc()
            yield translator.error(problem)
