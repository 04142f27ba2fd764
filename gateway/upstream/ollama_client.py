"""The Ollama fallback backend: health-checked, called with the model mapped, OpenAI out.

Used by the dispatcher when no vLLM replica can serve a model that `fallback.ollama.models`
maps. Failures before the first byte return None (the caller then answers its original error);
after it, the stream ends with one `data: {"error": ...}` event, as for vLLM upstreams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from starlette.responses import Response, StreamingResponse

from orchestra.config import OllamaFallback
from orchestra.protocol import error_json

from ..core.call import REPLICA, Call
from ..core.errors import UpstreamError
from ..metrics import GatewayMetrics
from . import ollama

log = logging.getLogger(__name__)

BACKEND_HEADER = "x-orchestra-backend"


class OllamaClient:
    def __init__(
        self, config: OllamaFallback, session: aiohttp.ClientSession, metrics: GatewayMetrics
    ) -> None:
        self.config = config
        self.url = config.url
        self._address = urlsplit(config.url).netloc  # the x-orchestra-replica value
        self.healthy = True  # optimistic until the first probe says otherwise
        self._session = session
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(
            total=config.timeout_s, sock_connect=config.connect_timeout_s
        )
        self._probe_timeout = aiohttp.ClientTimeout(total=config.connect_timeout_s)

    def covers(self, model: str) -> bool:
        return model in self.config.models

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.config.health_check_interval_s)

    async def check_once(self) -> bool:
        try:
            async with self._session.get(
                self.url + "/api/version", timeout=self._probe_timeout
            ) as resp:
                ok = resp.status == 200 and "version" in await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError):
            ok = False
        self._set_health(ok)
        return ok

    def _set_health(self, ok: bool) -> None:
        if ok != self.healthy:
            log.warning("ollama fallback at %s is %s", self.url, "up" if ok else "down")
        self.healthy = ok
        self._metrics.upstream_healthy.labels("_fallback", self.url).set(1 if ok else 0)

    async def forward(self, call: Call, payload: dict[str, Any], reason: str) -> Response | None:
        """Serve `call` from Ollama; None when Ollama failed before answering."""
        tag = self.config.models[call.model]
        body = ollama.to_ollama(call.path, payload, tag)
        api_path = ollama.PATHS[call.path]
        stream = bool(body.get("stream"))
        resp: aiohttp.ClientResponse | None = None
        handed_over = False
        try:
            async with asyncio.timeout(self.config.first_byte_timeout_s):
                resp = await self._session.post(
                    self.url + api_path,
                    data=orjson.dumps(body),
                    headers={"content-type": "application/json"},
                    timeout=self._timeout,
                )
                first = await (resp.content.readline() if stream and resp.ok else resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.warning("ollama fallback failed before answering: %r", exc)
            self._set_health(False)
            if resp is not None:
                resp.close()
            return None
        try:
            self._metrics.fallbacks.labels(call.model, reason).inc()
            headers = {**call.reply_headers, BACKEND_HEADER: "ollama", REPLICA: self._address}
            if resp.status != 200:
                return self._error_reply(resp.status, first, headers)
            if stream and first.lstrip().startswith(b'{"error"'):
                return self._error_reply(502, first, headers)
            if stream:
                include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
                translator = ollama.StreamTranslator(call.path, call.model, include_usage)
                handed_over = True
                return StreamingResponse(
                    self._relay(call, resp, first, translator),
                    headers=headers,
                    media_type="text/event-stream",
                )
            try:
                line = orjson.loads(first)
            except orjson.JSONDecodeError:
                line = None
            if not isinstance(line, dict) or "error" in line:
                detail = line.get("error") if isinstance(line, dict) else "malformed JSON"
                error = UpstreamError(f"fallback backend error: {detail}")
                return Response(error.body(), 502, headers=headers, media_type="application/json")
            out = ollama.from_ollama(call.path, line, call.model)
            call.usage(self._metrics, out.get("usage"))
            return Response(orjson.dumps(out), headers=headers, media_type="application/json")
        finally:
            if not handed_over:
                resp.release()

    @staticmethod
    def _error_reply(status: int, raw: bytes, headers: dict[str, str]) -> Response:
        try:
            detail = orjson.loads(raw).get("error", "")
        except (orjson.JSONDecodeError, AttributeError):
            detail = raw[:200].decode("utf-8", "replace")
        client_error = 400 <= status < 500 and status != 404  # 404 = our model map is wrong
        out_status = status if client_error else 502
        type_ = "invalid_request_error" if client_error else "upstream_error"
        body = error_json(f"fallback backend answered {status}: {detail}", type_, out_status)
        return Response(body, out_status, headers=headers, media_type="application/json")

    async def _relay(
        self,
        call: Call,
        resp: aiohttp.ClientResponse,
        first: bytes,
        translator: ollama.StreamTranslator,
    ) -> AsyncIterator[bytes]:
        idle = self.config.idle_read_timeout_s
        problem = ""
        try:
            out = translator.feed(first)
            if out:
                yield out
            while not translator.done:
                async with asyncio.timeout(idle):
                    line = await resp.content.readline()
                if not line:
                    problem = "fallback backend closed the stream before done"
                    break
                out = translator.feed(line)
                if out:
                    yield out
        except TimeoutError:
            problem = f"fallback backend sent nothing for {idle:g}s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            problem = f"fallback backend connection lost mid-stream: {exc.__class__.__name__}"
        finally:
            if translator.done and not problem:
                resp.release()
            else:
                resp.close()
            call.usage(self._metrics, translator.usage)
        if problem:
            self._metrics.stream_errors.labels(call.model).inc()
            yield translator.error(problem)
