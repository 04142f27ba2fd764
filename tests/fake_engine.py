"""A fake vLLM-compatible OpenAI server for tests and benchmarks (aiohttp, run as a subprocess).

    python tests/fake_engine.py [MODEL] [--model PATH] --port P [--host H]
                                [--served-model-name NAME ...] [switches below]

With --api-key KEY, /v1/* answer 401 unless sent `Authorization: Bearer KEY` (as vLLM does).
vLLM's usual flags (--tensor-parallel-size, --max-model-len, --dtype, --gpu-memory-utilization,
--enforce-eager, --enable-sleep-mode, anything unknown) are accepted and ignored, so a supervisor
can launch it exactly like `vllm serve`. Routes: /health, /v1/models, /v1/chat/completions and
/v1/completions (SSE when "stream"), /v1/embeddings, /metrics (vllm: gauges and counters), and
with --enable-sleep-mode /sleep, /wake_up, /is_sleeping. Output is deterministic: max_tokens
words "tok0 tok1 ..." (or "The capital of France is Paris." when asked); prompt tokens = words.

Switches:
  --startup-delay S   bind the port only after S seconds (connection refused while "loading")
  --fail-start        print a vLLM-like traceback tail to stderr and exit 1 before binding
  --exit-after S      exit with code 3 S seconds after binding (a crash while READY)
  --ignore-sigterm    ignore SIGTERM (to exercise SIGKILL escalation); otherwise SIGTERM exits 0
  --token-rate TPS    per-stream token pacing (0 = as fast as possible)
  --ttft-ms MS        delay before the first token
  --max-running N     at most N requests generate at once; the rest queue and count as waiting
  --sleep-delay S, --wake-delay S   time taken by /sleep and /wake_up (default 0.2)
  --fault KIND        none | 500 | 503 | 429 | error (with "status") | hang | slow-headers
                      (waits --fault-delay S) | hang-mid-stream | cut-mid-stream |
                      crash-mid-stream | crash | no-done | malformed | unhealthy (/health 503)
  --fail-rate F       every round(1/F)-th inference request answers 500
  --reply TEXT        answer every generation with TEXT (models that disagree, for votes)
  --slow-rate F, --slow-ms MS   a fraction F of inference requests waits MS first (a tail)
  --enable-lora, --lora-modules NAME=PATH ...   adapters answer "NAME-tok0 ..."; with
                      --enable-lora, /v1/load_lora_adapter and /v1/unload_lora_adapter

Also /tokenize, /detokenize, /v1/rerank, /v1/score, /pooling (small deterministic replies) and
multipart /v1/audio/transcriptions|translations (the reply names the file's size and sha256).

Test hooks: POST /fake/fault {"kind", "count"?, "status"?, "delay"?} (count = only the next N
inference requests), GET /fake/stats (counters + last 100 requests), POST /fake/reset,
POST /fake/config {"token_rate"?, "ttft_ms"?}. `FakeEngineProcess` runs it from pytest or benches.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from orchestra.health import HEALTH_PATH, NotAlive, probe_sync, wait_healthy_sync
from orchestra.lifetime import spawn, stop_group

ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}
BREAKS = {"hang-mid-stream", "cut-mid-stream", "crash-mid-stream"}  # after 2 chunks
MID_STREAM = BREAKS | {"malformed", "no-done"}
FAULT_KINDS = {"none", "500", "503", "429", "error", "hang", "slow-headers", "crash", "unhealthy"}
FAULT_KINDS |= MID_STREAM
PARIS = "The capital of France is Paris.".split(" ")
DONE = b"data: [DONE]\n\n"
EXTRA = {"/tokenize", "/detokenize", "/v1/rerank", "/rerank", "/v1/score", "/score", "/pooling"}
AUDIO = {"/v1/audio/transcriptions", "/v1/audio/translations"}
# OpenAI's Responses API (stored responses in this engine's memory, as vLLM keeps them) and
# Anthropic's Messages API, in the shapes the official SDKs parse.
APIS = {"/v1/responses", "/v1/messages", "/v1/messages/count_tokens"}
INFERENCE = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", *EXTRA, *AUDIO, *APIS}
UNRECORDED = {"/health", "/metrics"}


@dataclass
class Fault:
    kind: str = "none"
    count: int | None = None  # remaining requests it applies to; None = until cleared
    status: int | None = None
    delay: float = 5.0


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """vLLM's ErrorResponse: {"error": {"message", "type", "param", "code": <http status>}}."""
    err = {
        "message": message,
        "type": ERROR_TYPES.get(status, "APIError"),
        "param": None,
        "code": status,
    }
    return web.Response(
        status=status,
        body=orjson.dumps({"error": err}),
        headers=headers,
        content_type="application/json",
    )


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def words(text: Any) -> int:
    """Prompt 'tokens': words of a string, items of a token-id list, or text parts of content."""
    if isinstance(text, str):
        return len(text.split())
    if isinstance(text, list):
        return sum(
            1 if isinstance(t, int) else words(t.get("text", "") if isinstance(t, dict) else t)
            for t in text
        )
    return 0


def embedding(text: str, dim: int = 8) -> list[float]:
    raw = [zlib.crc32(f"{i}:{text}".encode()) / 2**31 - 1.0 for i in range(dim)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in raw]


def extra_reply(path: str, body: dict[str, Any], model: str) -> dict[str, Any]:
    """vLLM's tokenize, detokenize, rerank, score and pooling replies (deterministic)."""
    head = {"id": f"x-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
    if path == "/tokenize":
        text = str(body.get("prompt") or body.get("messages") or "").split()
        ids = [zlib.crc32(w.encode()) % 50000 for w in text]
        return {"count": len(ids), "max_model_len": 2048, "tokens": ids, "token_strs": None}
    if path == "/detokenize":
        return {"prompt": " ".join(f"tok{t}" for t in body.get("tokens") or [])}
    if path.endswith("rerank"):
        docs = [str(d) for d in body.get("documents") or []]
        scored = [(embedding(str(body.get("query")) + d, 1)[0], i, d) for i, d in enumerate(docs)]
        results = [
            {"index": i, "document": {"text": d}, "relevance_score": score}
            for score, i, d in sorted(scored, reverse=True)
        ]
        return head | {"usage": {"total_tokens": len(docs)}, "results": results}
    if path.endswith("score"):
        score = abs(embedding(f"{body.get('text_1')}|{body.get('text_2')}", 1)[0])
        data = [{"index": 0, "object": "score", "score": score}]
        return head | {"object": "list", "data": data, "usage": usage(2, 0)}
    vec = embedding(str(body.get("input")))
    data = [{"index": 0, "object": "pooling", "data": vec}]
    return head | {"object": "list", "data": data, "usage": usage(1, 0)}


def _anthropic_prompt(body: dict[str, Any]) -> tuple[int, str]:
    """Prompt tokens (words) and the last user text of an Anthropic Messages request."""
    msgs = body.get("messages") or []
    texts = []
    for m in msgs if isinstance(msgs, list) else []:
        content = m.get("content", "") if isinstance(m, dict) else ""
        if isinstance(content, list):
            content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        texts.append(str(content))
    return sum(words(t) for t in texts) + words(body.get("system") or ""), (texts or [""])[-1]


def _anthropic_error(status: int, message: str) -> web.Response:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status)


def _response_object(
    body: dict[str, Any], model: str, text: str, prompt: int, completion: int
) -> dict[str, Any]:
    """A completed Responses API object, as vLLM renders it (the SDK's required fields)."""
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": "completed",
        "background": bool(body.get("background")),
        "previous_response_id": body.get("previous_response_id"),
        "output": [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
    }


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
    }


@dataclass
class Reply:
    """One planned generation, rendered the way vLLM's OpenAI server renders it."""

    chat: bool
    id: str
    model: str
    toks: list[str]
    finish: str
    usage: dict[str, Any]
    kind: str  # the fault this request drew ("none" mostly)
    created: int = field(default_factory=lambda: int(time.time()))

    def head(self, stream: bool) -> dict[str, Any]:
        obj = "text_completion" if not self.chat else "chat.completion" + ".chunk" * stream
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self) -> dict[str, Any]:
        text = "".join(self.toks)
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
        else:
            choice["text"] = text
        choice |= {"logprobs": None, "finish_reason": self.finish, "stop_reason": None}
        return {**self.head(False), "choices": [choice], "usage": self.usage}

    def chunk(self, i: int) -> dict[str, Any]:
        """Token i's chunk; i = -1 is the chat role chunk; the last token carries finish_reason."""
        choice: dict[str, Any] = {"index": 0}
        tok = self.toks[i] if i >= 0 else ""
        if self.chat:
            choice["delta"] = {"content": tok} if i >= 0 else {"role": "assistant", "content": ""}
        else:
            choice["text"] = tok
        choice |= {"logprobs": None, "finish_reason": None}
        if i == len(self.toks) - 1:
            choice |= {"finish_reason": self.finish, "stop_reason": None}
        return {**self.head(True), "choices": [choice]}

    def usage_chunk(self) -> dict[str, Any]:
        return {**self.head(True), "choices": [], "usage": self.usage}


class Engine:
    """All state of one fake engine; its methods are the aiohttp handlers."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a, self.names = a, list(a.served_model_name or [a.model])
        self.name, self.created = self.names[0], int(time.time())
        # LoRA adapters (--lora-modules NAME=PATH, or loaded at run time): name -> path
        self.loras = dict(m.split("=", 1) for m in a.lora_modules or [] if "=" in m)
        self.fault = Fault(a.fault, delay=a.fault_delay)
        self.fail_every = round(1 / a.fail_rate) if a.fail_rate > 0 else 0
        self.token_rate, self.ttft = a.token_rate, a.ttft_ms / 1000
        self.slots = asyncio.Semaphore(a.max_running) if a.max_running else None
        self.sleeping = False
        self.rng = random.Random(a.port)  # --slow-rate draws, reproducible per engine
        self.stopping = False  # SIGTERM received: a request arriving now was sent too late
        # the Responses API's stored responses: this process's memory, lost with it (as vLLM's)
        self.stored: dict[str, dict[str, Any]] = {}
        # --kv-events-config (as vLLM takes it): a prefix cache publishing KV events
        self.kv = kv_publisher(a) if a.kv_events_config else None
        self.reset()

    def reset(self) -> None:
        self.requests_total = self.active = self.completed = self.cancelled = 0
        self.after_stop = 0
        self.running = self.waiting = self.inference_seen = 0
        self.prompt_tokens = self.generation_tokens = 0
        self.by_path: Counter[str] = Counter()
        self.success: Counter[str] = Counter()
        self.records: deque[dict[str, Any]] = deque(maxlen=100)

    # ---- bookkeeping ------------------------------------------------------------------------
    @web.middleware
    async def track(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        self.by_path[path] += 1
        if path.startswith("/fake/"):
            return await handler(request)
        self.requests_total += 1
        if path not in UNRECORDED:
            h = request.headers
            request["rec"] = rec = {
                "method": request.method,
                "path": path,
                "model": None,
                "x_request_id": h.get("x-request-id"),
                "authorization": "authorization" in h,
                "traceparent": h.get("traceparent"),  # the gateway's attempt span (tracing:)
            }
            self.records.append(rec)
        if path not in INFERENCE:
            return await handler(request)
        if self.stopping:
            self.after_stop += 1
            print(f"WARNING: fake engine got {path} while stopping", flush=True)
        self.active += 1
        try:
            resp = await handler(request)
        except asyncio.CancelledError:
            self.cancelled += 1
            request["rec"]["outcome"] = "cancelled"
            raise
        finally:
            self.active -= 1
        outcome = request.get("outcome", "completed")
        request["rec"].update(outcome=outcome, status=resp.status)
        if outcome == "cancelled":
            self.cancelled += 1
        else:
            self.completed += 1
        return resp

    async def echo_request_id(self, request: web.Request, resp: web.StreamResponse) -> None:
        if rid := request.headers.get("x-request-id"):
            resp.headers["x-request-id"] = rid

    def take_fault(self) -> Fault | None:
        self.inference_seen += 1
        f = self.fault
        if f.kind not in ("none", "unhealthy"):
            if f.count is not None:
                f.count -= 1
                if f.count <= 0:
                    self.fault = Fault(delay=f.delay)
            return f
        if self.fail_every and self.inference_seen % self.fail_every == 0:
            return Fault("500")
        return None

    # ---- inference --------------------------------------------------------------------------
    async def inference(self, request: web.Request) -> web.StreamResponse:
        if request.path in AUDIO:
            return await self.audio(request)
        try:
            body = orjson.loads(await request.read())
            assert isinstance(body, dict)
        except (orjson.JSONDecodeError, AssertionError):
            return error(400, "Request body must be a JSON object.")
        model = body.get("model")
        request["rec"].update(model=model, stream=bool(body.get("stream")))
        fault = self.take_fault()
        kind = fault.kind if fault else "none"
        if kind in ("500", "503", "429", "error"):
            status = fault.status if fault and fault.status else int(kind.replace("error", "500"))
            headers = {"Retry-After": "1"} if status in (429, 503) else None
            return error(status, f"Injected fault: {kind}", headers)
        if kind == "hang":
            await asyncio.Event().wait()
        if kind == "crash":
            os._exit(1)
        if kind == "slow-headers" and fault:
            await asyncio.sleep(fault.delay)
        if self.sleeping:
            return error(503, "The engine is sleeping; call /wake_up first.")
        if model not in self.names and model not in self.loras:
            return error(404, f"The model `{model}` does not exist.")
        if self.a.slow_rate and self.rng.random() < self.a.slow_rate:
            await asyncio.sleep(self.a.slow_ms / 1000)  # a tail: this request is slow
        if request.path == "/v1/embeddings":
            return self.embeddings(body)
        if request.path == "/tokenize" and self.kv is not None:
            return self.kv.tokenize(body)
        if request.path in EXTRA:
            return web.json_response(extra_reply(request.path, body, self.name))
        if request.path in APIS:
            return await self.other_api(request, body)
        return await self.generate(request, body, kind)

    # ---- the Responses and Messages APIs ----------------------------------------------------
    def _text(self, question: str, n: int) -> tuple[list[str], bool]:
        """The words of a reply (as `generate` plans them) and whether it ended by itself."""
        if self.a.reply:
            toks = self.a.reply.split(" ")[:n]
        elif "capital of France" in question:
            toks = PARIS[:n]
        else:
            toks = [f"tok{i}" for i in range(n)]
        stopped = bool(self.a.reply) or ("capital of France" in question and n >= len(PARIS))
        return [w if i == 0 else " " + w for i, w in enumerate(toks)], stopped

    async def other_api(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if request.path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": _anthropic_prompt(body)[0]})
        if request.path == "/v1/messages":
            n = body.get("max_tokens")
            if not isinstance(n, int) or n < 1:
                return _anthropic_error(400, "max_tokens: Field required")
            prompt, question = _anthropic_prompt(body)
            toks, stopped = self._text(question, n)
            self.prompt_tokens += prompt
            self.generation_tokens += len(toks)
            return await self._message(request, body, toks, stopped, prompt)
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            return error(404, f"Response with id '{previous}' not found.")
        inp = body.get("input", "")
        question = inp if isinstance(inp, str) else orjson.dumps(inp).decode()
        toks, stopped = self._text(question, int(body.get("max_output_tokens") or 16))
        prompt = words(question)
        self.prompt_tokens += prompt
        self.generation_tokens += len(toks)
        resp = _response_object(body, self.name, "".join(toks), prompt, len(toks))
        if body.get("store", True):
            self.stored[resp["id"]] = resp
        if not body.get("stream"):
            return web.json_response(resp)
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        whole = resp["output"][0]
        item, part = whole["id"], whole["content"][0]
        at = {"item_id": item, "output_index": 0, "content_index": 0}
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": {**resp, "status": "in_progress", "output": []}}),
            (
                "response.output_item.added",
                {"output_index": 0, "item": {**whole, "status": "in_progress", "content": []}},
            ),
            ("response.content_part.added", {**at, "part": {**part, "text": ""}}),
        ]
        for tok in toks:
            events.append(
                (
                    "response.output_text.delta",
                    {
                        "item_id": item,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": tok,
                        "logprobs": [],
                    },
                )
            )
        events += [
            ("response.output_text.done", {**at, "text": part["text"], "logprobs": []}),
            ("response.content_part.done", {**at, "part": part}),
            ("response.output_item.done", {"output_index": 0, "item": whole}),
            ("response.completed", {"response": resp}),
        ]
        for seq, (kind, data) in enumerate(events):
            event = {"type": kind, "sequence_number": seq, **data}
            await out.write(f"event: {kind}\n".encode() + sse(event))
            await asyncio.sleep(1 / self.token_rate if self.token_rate else 0)
        await out.write_eof()
        return out

    async def _message(
        self,
        request: web.Request,
        body: dict[str, Any],
        toks: list[str],
        stopped: bool,
        prompt: int,
    ) -> web.StreamResponse:
        stop = "end_turn" if stopped else "max_tokens"
        msg = {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": self.name,
            "content": [{"type": "text", "text": "".join(toks)}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": len(toks)},
        }
        if not body.get("stream"):
            return web.json_response(msg)
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        start = {**msg, "content": [], "stop_reason": None, "usage": {**msg["usage"]}}
        start["usage"]["output_tokens"] = 0
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": start},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ]
        events += [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
            for t in toks
        ]
        events += [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": len(toks)},
            },
            {"type": "message_stop"},
        ]
        for event in events:
            await out.write(f"event: {event['type']}\n".encode() + sse(event))
            await asyncio.sleep(1 / self.token_rate if self.token_rate else 0)
        await out.write_eof()
        return out

    async def response_get(self, request: web.Request) -> web.Response:
        found = self.stored.get(request.match_info["rid"])
        if found is None:
            return error(404, f"Response with id '{request.match_info['rid']}' not found.")
        return web.json_response(found)

    async def response_cancel(self, request: web.Request) -> web.Response:
        found = self.stored.get(request.match_info["rid"])
        if found is None:
            return error(404, f"Response with id '{request.match_info['rid']}' not found.")
        if not found.get("background"):
            return error(400, "Cannot cancel a synchronous response.")
        found["status"] = "cancelled"
        return web.json_response(found)

    async def generate(self, request: web.Request, body: dict[str, Any], kind: str) -> Any:
        chat = request.path == "/v1/chat/completions"
        n = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        if not isinstance(n, int) or n < 1:
            return error(400, f"max_tokens must be at least 1, got {n}.")
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                return error(400, "'messages' must be a non-empty list.")
            prompt_tokens = sum(words(m.get("content", "")) for m in msgs)
            last_user = next((m for m in reversed(msgs) if m.get("role") == "user"), {})
            question = str(last_user.get("content", ""))
        else:
            prompt_tokens, question = words(body.get("prompt", "")), str(body.get("prompt", ""))
        model = str(body.get("model"))
        if self.kv is not None:
            self.kv.serve(body)
        if model in self.loras:  # an adapter answers differently from its base
            toks, finish = [f"{model}-tok{i}" for i in range(n)], "length"
        elif self.a.reply:
            toks, finish = self.a.reply.split(" ")[:n], "stop"
        elif "capital of France" in question:
            toks, finish = PARIS[:n], "stop" if n >= len(PARIS) else "length"
        else:
            toks, finish = [f"tok{i}" for i in range(n)], "length"
        toks = [t if i == 0 else " " + t for i, t in enumerate(toks)]
        r = Reply(
            chat,
            f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            model if model in self.loras else self.name,
            toks,
            finish,
            usage(prompt_tokens, len(toks)),
            kind,
        )
        if self.slots:
            self.waiting += 1
            try:
                await self.slots.acquire()
            finally:
                self.waiting -= 1
        self.running += 1
        self.prompt_tokens += prompt_tokens
        try:
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                resp = await self.stream(request, r, include_usage)
            else:
                gaps = (len(toks) - 1) / self.token_rate if self.token_rate else 0.0
                await asyncio.sleep(self.ttft + gaps)
                out = orjson.dumps(r.whole())
                if kind == "malformed":  # a complete 200 reply whose JSON is cut in half
                    out = out[: len(out) // 2]
                elif kind in MID_STREAM - {"no-done"}:
                    return await self.partial(request, out, kind)
                resp = web.Response(body=out, content_type="application/json")
            if request.get("outcome") is None:
                self.generation_tokens += len(toks)
                self.success[finish] += 1
            return resp
        finally:
            self.running -= 1
            if self.slots:
                self.slots.release()

    async def stream(self, request: web.Request, r: Reply, include_usage: bool) -> Any:
        events = [sse(r.chunk(i)) for i in range(-1 if r.chat else 0, len(r.toks))]
        if include_usage:
            events.append(sse(r.usage_chunk()))
        if r.kind != "no-done":
            events.append(DONE)
        if r.kind == "malformed":
            events.insert(2, b'data: {"id": "broken", "choices": [\n\n')
        gap = 1 / self.token_rate if self.token_rate else 0.0
        first = 1 if r.chat else 0  # index of the first token event
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        try:
            if self.ttft:
                await asyncio.sleep(self.ttft)
            for i, ev in enumerate(events):
                if i == 2 and r.kind in BREAKS:
                    return await self.break_off(request, resp, r.kind)
                if gap and first < i < first + len(r.toks):
                    await asyncio.sleep(gap)
                await resp.write(ev)
        except ConnectionResetError:
            request["outcome"] = "cancelled"
        return resp

    async def partial(self, request: web.Request, out: bytes, kind: str) -> web.StreamResponse:
        """A non-stream reply that breaks mid-body: headers + half the JSON, then the fault."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(out)
        await resp.prepare(request)
        await resp.write(out[: len(out) // 2])
        return await self.break_off(request, resp, kind)

    async def break_off(
        self, request: web.Request, resp: web.StreamResponse, kind: str
    ) -> web.StreamResponse:
        if kind == "crash-mid-stream":
            await asyncio.sleep(0.02)  # let the bytes already written leave
            os._exit(1)
        if kind == "cut-mid-stream" and request.transport is not None:
            request.transport.abort()
        else:  # hang-mid-stream
            await asyncio.Event().wait()
        request["outcome"] = "cut"
        return resp

    def embeddings(self, body: dict[str, Any]) -> web.Response:
        inp = body.get("input", "")
        items = [inp] if isinstance(inp, str) or (inp and isinstance(inp[0], int)) else inp
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(items):
            vec = embedding(item if isinstance(item, str) else repr(item))
            emb: Any = base64.b64encode(struct.pack("<8f", *vec)).decode() if b64 else vec
            data.append({"index": i, "object": "embedding", "embedding": emb})
        n = sum(words(it) if isinstance(it, str) else len(it) for it in items)
        self.prompt_tokens += n
        out = {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": self.name,
            "data": data,
            "usage": usage(n, 0),
        }
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def audio(self, request: web.Request) -> web.Response:
        """Multipart like OpenAI's audio API: `file` and `model` parts (any order)."""
        if not request.content_type.startswith("multipart/form-data"):
            return error(400, "Expected multipart/form-data.")
        fields: dict[str, str] = {}
        digest, size, filename = hashlib.sha256(), 0, ""
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                filename = part.filename or ""
                while chunk := await part.read_chunk():
                    digest.update(chunk)
                    size += len(chunk)
            elif part.name:
                fields[part.name] = await part.text()
        model = fields.get("model")
        request["rec"].update(model=model, fields=fields, size=size)
        fault = self.take_fault()
        if fault is not None and fault.kind in ("500", "503", "429", "error"):
            status = fault.status or int(fault.kind.replace("error", "500"))
            return error(status, f"Injected fault: {fault.kind}")
        if model not in self.names:
            return error(404, f"The model `{model}` does not exist.")
        kind = "translation" if request.path.endswith("translations") else "transcription"
        text = f"{kind} of {filename}: {size} bytes sha256 {digest.hexdigest()}"
        return web.json_response({"text": text})

    # ---- plain routes -----------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.fault.kind == "unhealthy" else 200)

    async def models(self, request: web.Request) -> web.Response:
        cards = [
            {
                "id": n,
                "object": "model",
                "created": self.created,
                "owned_by": "vllm",
                "root": self.a.model,
                "parent": None,
                "max_model_len": self.a.max_model_len,
                "permission": [],
            }
            for n in self.names
        ]
        cards += [
            {
                "id": n,
                "object": "model",
                "created": self.created,
                "owned_by": "vllm",
                "root": path,
                "parent": self.name,
                "max_model_len": None,
                "permission": [],
            }
            for n, path in self.loras.items()
        ]
        return web.json_response({"object": "list", "data": cards})

    async def metrics(self, request: web.Request) -> web.Response:
        lbl = f'{{model_name="{self.name}"}}'
        usage = min(1.0, self.running / (self.a.max_running or 256))
        lines = []
        for kind, name, value in (
            ("gauge", "vllm:num_requests_running", self.running),
            ("gauge", "vllm:num_requests_waiting", self.waiting),
            ("gauge", "vllm:gpu_cache_usage_perc", usage),
            ("gauge", "vllm:kv_cache_usage_perc", usage),
            ("counter", "vllm:prompt_tokens", self.prompt_tokens),
            ("counter", "vllm:generation_tokens", self.generation_tokens),
        ):
            suffix = "_total" if kind == "counter" else ""
            lines += [f"# TYPE {name} {kind}", f"{name}{suffix}{lbl} {float(value)}"]
        lines += self.kv.metric_lines(lbl) if self.kv is not None else []
        lines.append("# TYPE vllm:request_success counter")
        for reason in ("stop", "length"):
            lines.append(
                f'vllm:request_success_total{{finished_reason="{reason}",'
                f'model_name="{self.name}"}} {float(self.success[reason])}'
            )
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def sleep(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.a.sleep_delay)
        self.sleeping = True
        return web.Response()

    async def wake_up(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.a.wake_delay)
        self.sleeping = False
        return web.Response()

    async def is_sleeping(self, request: web.Request) -> web.Response:
        return web.json_response({"is_sleeping": self.sleeping})

    async def load_lora(self, request: web.Request) -> web.Response:
        b = await request.json()
        name, path = b.get("lora_name"), b.get("lora_path")
        if not name or not path:
            return error(400, "lora_name and lora_path are required.")
        if name in self.loras:
            return error(400, f"The lora adapter '{name}' has already been loaded.")
        self.loras[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora(self, request: web.Request) -> web.Response:
        name = (await request.json()).get("lora_name")
        if self.loras.pop(name, None) is None:
            return error(404, f"The lora adapter '{name}' cannot be found.")
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    # ---- test hooks -------------------------------------------------------------------------
    async def set_fault(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            b = await request.json()
            if b.get("kind") not in FAULT_KINDS:
                return error(400, f"unknown fault kind {b.get('kind')!r}")
            self.fault = Fault(
                str(b["kind"]),
                b.get("count"),
                b.get("status"),
                float(b.get("delay", self.a.fault_delay)),
            )
        return web.json_response(asdict(self.fault))

    async def set_config(self, request: web.Request) -> web.Response:
        b = await request.json()
        self.token_rate = float(b.get("token_rate", self.token_rate))
        self.ttft = float(b.get("ttft_ms", self.ttft * 1000)) / 1000
        return web.json_response({"token_rate": self.token_rate, "ttft_ms": self.ttft * 1000})

    async def stats(self, request: web.Request) -> web.Response:
        keys = ("requests_total", "active", "completed", "cancelled", "running", "waiting")
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out |= {
            "by_path": dict(self.by_path),
            "sleeping": self.sleeping,
            "fault": asdict(self.fault),
            "records": list(self.records),
        }
        return web.json_response(out)

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response()

    @web.middleware
    async def api_key(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """vLLM's --api-key: every /v1 route needs `Authorization: Bearer KEY`; /health,
        /metrics and the rest stay open."""
        key = self.a.api_key
        if key and request.path.startswith("/v1"):
            if request.headers.get("authorization", "") != f"Bearer {key}":
                self.by_path["401"] += 1
                return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.api_key, self.track])
        app.on_response_prepare.append(self.echo_request_id)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/v1/models", self.models)
        r.add_get("/metrics", self.metrics)
        for path in INFERENCE:
            r.add_post(path, self.inference)
        if self.a.enable_lora:
            r.add_post("/v1/load_lora_adapter", self.load_lora)
            r.add_post("/v1/unload_lora_adapter", self.unload_lora)
        if self.a.enable_sleep_mode:
            r.add_post("/sleep", self.sleep)
            r.add_post("/wake_up", self.wake_up)
            r.add_get("/is_sleeping", self.is_sleeping)
        r.add_get("/v1/responses/{rid}", self.response_get)
        r.add_post("/v1/responses/{rid}/cancel", self.response_cancel)
        r.add_route("*", "/fake/fault", self.set_fault)
        r.add_post("/fake/config", self.set_config)
        r.add_get("/fake/stats", self.stats)
        r.add_post("/fake/reset", self.reset_stats)
        if self.kv is not None:
            self.kv.install(app)
        return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fake vLLM-compatible OpenAI server.")
    p.add_argument("model_tag", nargs="?")
    p.add_argument("--model", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--enable-sleep-mode", action="store_true")
    p.add_argument("--startup-delay", type=float, default=0.0)
    p.add_argument("--fail-start", action="store_true")
    p.add_argument("--exit-after", type=float, default=0.0)
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--token-rate", type=float, default=0.0)
    p.add_argument("--ttft-ms", type=float, default=0.0)
    p.add_argument("--max-running", type=int, default=0)
    p.add_argument("--sleep-delay", type=float, default=0.2)
    p.add_argument("--wake-delay", type=float, default=0.2)
    p.add_argument("--fault", default="none", choices=sorted(FAULT_KINDS))
    p.add_argument("--fault-delay", type=float, default=5.0)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--slow-rate", type=float, default=0.0)
    p.add_argument("--slow-ms", type=float, default=1000.0)
    p.add_argument("--enable-lora", action="store_true")
    p.add_argument("--lora-modules", nargs="+", default=None)
    p.add_argument("--reply", default="", help="answer every generation with this text")
    p.add_argument("--api-key", default=None, help="like vLLM: /v1/* need Bearer KEY (else 401)")
    p.add_argument("--kv-events-config", default=None, help="like vLLM's: publish KV events")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--num-gpu-blocks-override", type=int, default=4096)
    a, _unknown = p.parse_known_args(argv)
    a.model = a.model or a.model_tag or "fake-model"
    return a


def kv_publisher(a: argparse.Namespace) -> Any:
    """tests/fake_kv_events.py's publisher (imported as a sibling: this file runs as a script)."""
    try:
        from tests.fake_kv_events import KvPublisher
    except ModuleNotFoundError:
        from fake_kv_events import KvPublisher  # type: ignore[no-redef]
    return KvPublisher(a.kv_events_config, a.block_size, a.num_gpu_blocks_override)


def die(code: int) -> None:
    print(f"ERROR: fake engine dying with exit code {code}", flush=True)
    os._exit(code)


async def serve(a: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if a.ignore_sigterm:
        loop.add_signal_handler(signal.SIGTERM, lambda: print("INFO: ignoring SIGTERM", flush=True))
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    engine = Engine(a)
    runner = web.AppRunner(
        engine.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.1
    )
    await runner.setup()
    await web.TCPSite(runner, a.host, a.port, backlog=4096, reuse_address=True).start()
    print(f"INFO: fake engine {engine.name} listening on {a.host}:{a.port}", flush=True)
    if a.exit_after > 0:
        loop.call_later(a.exit_after, die, 3)
    await stop.wait()
    # Summary lines that tests read from the engine log (a supervisor captures stdout there).
    engine.stopping = True
    print(f"INFO: fake engine stopping with {engine.active} request(s) in flight", flush=True)
    await runner.cleanup()
    print(
        f"INFO: fake engine stopped: {engine.completed} completed, "
        f"{engine.after_stop} arrived while stopping",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(a.startup_delay)
    if a.fail_start:
        print(
            "RuntimeError: Engine core initialization failed. See root cause above. "
            "Failed core proc(s): {}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    try:
        import uvloop

        return uvloop.run(serve(a))
    except ImportError:
        return asyncio.run(serve(a))


# ---- test/bench helper (importing this module starts nothing) -----------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeEngineProcess:
    """The fake engine as a subprocess in its own session: `with FakeEngineProcess(...) as e:`."""

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        name: str = "fake-model",
        env: dict[str, str] | None = None,
    ) -> None:
        self.args, self.name, self.env = args, name, env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None  # a NamedTemporaryFile: the child's stdout and stderr
        self._output = ""

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            os.path.abspath(__file__),
            self.name,
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self, wait_ready: bool = True, timeout: float = 15) -> FakeEngineProcess:
        env = {**os.environ, **(self.env or {})}
        self._log = tempfile.NamedTemporaryFile(prefix="fake-engine-", suffix=".log")
        self.proc = spawn(self.command, stdout=self._log, env=env)
        if wait_ready:
            proc = self.proc
            try:
                wait_healthy_sync(
                    self.url,
                    timeout_s=timeout,
                    interval_s=0.05,
                    probe_timeout_s=1.0,
                    is_alive=lambda: proc.poll() is None,
                )
            except NotAlive:
                raise RuntimeError(
                    f"fake engine exited {proc.returncode}: {self.output()}"
                ) from None
            except TimeoutError as exc:
                self.stop()
                raise TimeoutError(f"fake engine not ready: {exc}: {self.output()}") from None
        return self

    def healthy(self) -> bool:
        return probe_sync(self.url + HEALTH_PATH, 1.0) is None

    def output(self) -> str:
        """Everything the engine printed so far (stdout and stderr); kept after stop()."""
        if self._log is None or self._log.closed:
            return self._output
        with open(self._log.name, errors="replace") as f:
            return f.read()

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, 5.0)
        if self._log is not None and not self._log.closed:
            self._output = self.output()
            self._log.close()

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def set_fault(self, kind: str, **kw: Any) -> None:
        self._call("/fake/fault", {"kind": kind, **kw})

    def stats(self) -> dict[str, Any]:
        return dict(self._call("/fake/stats"))

    def configure(self, **kw: float) -> None:
        """Change pacing at runtime: token_rate=TPS, ttft_ms=MS."""
        self._call("/fake/config", kw)

    def reset_stats(self) -> None:
        self._call("/fake/reset", {})

    def __enter__(self) -> FakeEngineProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
