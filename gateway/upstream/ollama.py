"""OpenAI <-> Ollama translation (pure functions; no I/O).

Ollama's native API (docs/api.md): POST /api/chat {model, messages, stream, options, format} and
POST /api/generate {model, prompt, raw, ...} answer NDJSON when streaming — one object per line,
`done: false` with `message.content` (chat) or `response` (generate); the last line has
`done: true`, `done_reason` ("stop" | "length" | ...), `prompt_eval_count`, `eval_count` and
nanosecond durations. An `{"error": "..."}` line may arrive mid-stream; a failed call answers a
non-200 status with `{"error": "..."}`. POST /api/embed {model, input} -> {embeddings: [[...]]}.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from ..core import sse
from ..core.errors import BadRequest

# OpenAI (and vLLM extra) sampling parameters -> Ollama `options`.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repetition_penalty": "repeat_penalty",
}


def _options(payload: dict[str, Any]) -> dict[str, Any]:
    options = {dst: payload[src] for src, dst in _OPTIONS.items() if payload.get(src) is not None}
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if limit is not None:
        options["num_predict"] = limit
    stop = payload.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else stop
    return options


def _message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise BadRequest("each message must be an object", param="messages")
    out: dict[str, Any] = {"role": message.get("role", "user")}
    content = message.get("content")
    if isinstance(content, list):  # content parts: text joined, data-URL images passed
        texts, images = [], []
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                url = str((part.get("image_url") or {}).get("url", ""))
                if url.startswith("data:") and "," in url:
                    images.append(url.split(",", 1)[1])
        out["content"] = "".join(texts)
        if images:
            out["images"] = images
    else:
        out["content"] = "" if content is None else str(content)
    return out


def to_ollama(path: str, payload: dict[str, Any], tag: str) -> dict[str, Any]:
    """The Ollama request body for an OpenAI request to `path`."""
    if path == "/v1/embeddings":
        return {"model": tag, "input": payload.get("input", "")}
    body: dict[str, Any] = {"model": tag, "stream": payload.get("stream") is True}
    options = _options(payload)
    if options:
        body["options"] = options
    if path == "/v1/chat/completions":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("`messages` must be a non-empty list", param="messages")
        body["messages"] = [_message(m) for m in messages]
        fmt = payload.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            body["format"] = "json"
        elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            body["format"] = (fmt.get("json_schema") or {}).get("schema", "json")
    else:
        prompt = payload.get("prompt", "")
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise BadRequest("the fallback backend takes one text prompt", param="prompt")
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("`prompt` must be a string", param="prompt")
        body["prompt"] = prompt
        body["raw"] = True  # a completion prompt is raw text, no chat template
    return body


def usage(line: dict[str, Any]) -> dict[str, int]:
    prompt = line.get("prompt_eval_count")
    completion = line.get("eval_count")
    p = prompt if isinstance(prompt, int) else 0
    c = completion if isinstance(completion, int) else 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _finish(line: dict[str, Any], tool_calls: bool = False) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if line.get("done_reason") == "length" else "stop"


def _tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls") or []
    out = []
    for i, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function", {}) if isinstance(call, dict) else {}
        arguments = function.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        out.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "index": i,
                "function": {"name": function.get("name", ""), "arguments": arguments},
            }
        )
    return out


def from_ollama(path: str, line: dict[str, Any], model: str) -> dict[str, Any]:
    """A whole (non-streamed) Ollama answer as the OpenAI response for `path`."""
    created = int(time.time())
    if path == "/v1/embeddings":
        vectors = line.get("embeddings") or []
        return {
            "object": "list",
            "model": model,
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ],
            "usage": {**usage(line), "completion_tokens": 0},
        }
    if path == "/v1/chat/completions":
        message = line.get("message") or {}
        calls = _tool_calls(message)
        out_message: dict[str, Any] = {"role": "assistant", "content": message.get("content", "")}
        if calls:
            out_message["tool_calls"] = calls
        choice = {"index": 0, "message": out_message, "finish_reason": _finish(line, bool(calls))}
        kind, prefix = "chat.completion", "chatcmpl"
    else:
        choice = {"index": 0, "text": line.get("response", ""), "finish_reason": _finish(line)}
        kind, prefix = "text_completion", "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": created,
        "model": model,
        "choices": [{**choice, "logprobs": None}],
        "usage": usage(line),
    }


class StreamTranslator:
    """Ollama NDJSON lines in, OpenAI SSE chunks out (role chunk, deltas, finish, usage, DONE)."""

    def __init__(self, path: str, model: str, include_usage: bool) -> None:
        self.chat = path == "/v1/chat/completions"
        self.include_usage = include_usage
        self.usage: dict[str, int] | None = None
        self.done = False
        self._head = {
            "id": f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self._started = False

    def _chunk(self, delta: dict[str, Any] | str, finish: str | None) -> bytes:
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta
        choice.update(logprobs=None, finish_reason=finish)
        return sse.json_frame({**self._head, "choices": [choice]})

    def feed(self, raw: bytes) -> bytes:
        """SSE bytes for one NDJSON line (b"" for blank lines)."""
        raw = raw.strip()
        if not raw or self.done:
            return b""
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.error("fallback backend sent malformed NDJSON")
        if not isinstance(line, dict):
            return self.error("fallback backend sent malformed NDJSON")
        if "error" in line:
            return self.error(f"fallback backend error: {line['error']}")
        out = b""
        if self.chat and not self._started:
            out += self._chunk({"role": "assistant", "content": ""}, None)
        self._started = True
        if self.chat:
            message = line.get("message") or {}
            calls = _tool_calls(message)
            if calls:
                out += self._chunk({"tool_calls": calls}, None)
            text = message.get("content", "")
        else:
            calls, text = [], line.get("response", "")
        if text:
            out += self._chunk({"content": text} if self.chat else text, None)
        if line.get("done"):
            self.done = True
            self.usage = usage(line)
            out += self._chunk({} if self.chat else "", _finish(line, bool(calls)))
            if self.include_usage:
                out += sse.json_frame({**self._head, "choices": [], "usage": self.usage})
            out += sse.DONE
        return out

    def error(self, message: str, code: str = "stream_interrupted") -> bytes:
        """The stream's last event: it failed (the fallback serves OpenAI's paths only)."""
        self.done = True
        return sse.error_event("openai", message, "upstream_error", code)
