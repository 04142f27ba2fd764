"""The response cache's two stream conversions (chat/completions and completions only): a
streamed answer assembled whole (`Assembler`, to store it), and a stored answer replayed as the
stream a streamed call expects (`replay`).

Invariants:
- An answer is assembled only from a stream that ended with `[DONE]`, carried its `usage`
  (a stream without `stream_options.include_usage` is not stored: a hit answers with usage) and
  said nothing the plain answer would not hold the same way (tool calls, logprobs, an error).
- A replay says in one chunk per choice what the engine said token by token: the SDK's
  accumulated text, finish reason and usage are those of the answer stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from ..core.reply import IterStream, Stream
from ..core.sse import DONE, DONE_DATA, SseParser, json_frame

_CHUNK = {"chat.completion.chunk": "chat.completion", "text_completion": "text_completion"}
_HEAD = ("id", "created", "model", "system_fingerprint")


class Assembler:
    """A streamed answer's events fed chunk by chunk; `answer` is the whole JSON answer."""

    __slots__ = ("_choices", "_done", "_head", "_object", "_parser", "_spoilt", "_usage")

    def __init__(self) -> None:
        self._parser = SseParser()
        self._head: dict[str, Any] = {}
        self._object: str | None = None
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: object = None
        self._done = False
        self._spoilt = False  # something a plain answer would not hold the same way

    def feed(self, chunk: bytes) -> None:
        for event in self._parser.feed(chunk):
            if self._spoilt or self._done:
                return
            if event.data == DONE_DATA:
                self._done = True
                continue
            try:
                self._take(orjson.loads(event.data))
            except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
                self._spoilt = True

    def _take(self, data: dict[str, Any]) -> None:
        kind = _CHUNK.get(data.get("object", ""))
        if kind is None or "error" in data:
            self._spoilt = True
            return
        self._object = kind
        self._head = {k: data[k] for k in _HEAD if k in data}
        if data.get("usage") is not None:
            self._usage = data["usage"]
        for part in data.get("choices") or []:
            if part.get("logprobs") is not None:
                self._spoilt = True
            choice = self._choices.setdefault(part["index"], {"text": "", "finish": None})
            delta = part.get("delta") or {}
            if delta.get("tool_calls") or delta.get("function_call"):
                self._spoilt = True
            choice["text"] += delta.get("content") or part.get("text") or ""
            if part.get("finish_reason") is not None:
                choice["finish"] = part["finish_reason"]

    def answer(self) -> bytes | None:
        """The plain answer, or None when this stream must not be stored (module doc)."""
        if not self._done or self._spoilt or self._usage is None or not self._choices:
            return None
        chat = self._object == "chat.completion"
        choices = []
        for index in sorted(self._choices):
            part = self._choices[index]
            choice: dict[str, Any] = {"index": index}
            if chat:
                choice["message"] = {"role": "assistant", "content": part["text"]}
            else:
                choice["text"] = part["text"]
            choice["logprobs"] = None
            choice["finish_reason"] = part["finish"]
            choices.append(choice)
        body = {**self._head, "object": self._object, "choices": choices, "usage": self._usage}
        return orjson.dumps(body)


def replay(body: bytes, include_usage: bool) -> bytes | None:
    """A stored answer as a stream's events; None when it holds what a replay cannot say."""
    answer = orjson.loads(body)
    kind = answer.get("object")
    if kind not in ("chat.completion", "text_completion"):
        return None
    chat = kind == "chat.completion"
    head = {k: answer[k] for k in _HEAD if k in answer}
    head["object"] = "chat.completion.chunk" if chat else "text_completion"
    frames: list[bytes] = []
    for choice in answer.get("choices") or []:
        if choice.get("logprobs") is not None:
            return None
        index = choice.get("index", 0)
        if chat:
            message = choice.get("message") or {}
            if message.get("tool_calls") or message.get("function_call"):
                return None
            delta = {"role": "assistant", "content": message.get("content") or ""}
            parts = [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": None},
                {"index": index, "delta": {}, "logprobs": None, "finish_reason": None},
            ]
        else:
            text = {"index": index, "text": choice.get("text") or "", "logprobs": None}
            parts = [{**text, "finish_reason": None}, {**text, "text": ""}]
        parts[1]["finish_reason"] = choice.get("finish_reason")
        frames.extend(json_frame({**head, "choices": [part]}) for part in parts)
    if include_usage:
        frames.append(json_frame({**head, "choices": [], "usage": answer.get("usage")}))
    frames.append(DONE)
    return b"".join(frames)


class Tee(IterStream):
    """A streamed answer passed on as it comes, assembled on the way; `store` gets the whole
    answer once the stream ended (never when the reader left or the stream failed: the store
    runs after the last chunk was read, not in a `finally`). Closing it closes its source,
    read or not."""

    __slots__ = ("_source",)

    def __init__(self, source: Stream, store: Callable[[bytes], None]) -> None:
        super().__init__(_teed(source, store))
        self._source = source

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self._source.aclose()


async def _teed(source: Stream, store: Callable[[bytes], None]) -> AsyncIterator[bytes]:
    assembler = Assembler()
    async for chunk in source:
        assembler.feed(chunk)
        yield chunk
    answer = assembler.answer()
    if answer is not None:
        store(answer)
