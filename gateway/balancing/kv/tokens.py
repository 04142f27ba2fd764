"""A request's token ids exactly as the engine computes them: the engine's own `/tokenize`.

Chat requests send `messages` (with `tools`, `chat_template_kwargs`, `add_generation_prompt`,
`continue_final_message` when given), so the engine applies the same chat template as for the
chat completion itself; completions send `prompt` (a list of token ids is used as it is, no
call). Any failure (timeout, non-200, a shape we cannot send) is None: the caller falls back.
Cost: one small HTTP call to an engine per request, measured in docs/balancing.md.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

from ..replica import Replica

log = logging.getLogger(__name__)
_CHAT_FIELDS = ("tools", "chat_template_kwargs", "add_generation_prompt", "continue_final_message")


def tokenize_body(payload: dict[str, Any]) -> dict[str, Any] | list[int] | None:
    """The /tokenize body for a request, its token ids when it already is tokens, or None."""
    model = payload.get("model")
    messages = payload.get("messages")
    if isinstance(messages, list):
        body: dict[str, Any] = {"model": model, "messages": messages}
        body["add_generation_prompt"] = True
        body.update({k: payload[k] for k in _CHAT_FIELDS if k in payload})
        return body
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        return {"model": model, "prompt": prompt}
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    return None  # a batch of prompts, or nothing to tokenize


class Tokenizer:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def tokens(
        self, replica: Replica, payload: dict[str, Any], timeout_s: float
    ) -> list[int] | None:
        body = tokenize_body(payload)
        if body is None or isinstance(body, list):
            return body
        headers = {"content-type": "application/json"}
        if replica.api_key is not None:
            headers["authorization"] = f"Bearer {replica.api_key}"
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.post(
                    replica.url + "/tokenize", data=orjson.dumps(body), headers=headers
                ) as resp:
                    if resp.status != 200:
                        return None
                    tokens = orjson.loads(await resp.read()).get("tokens")
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError, AttributeError):
            return None
        if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
            return tokens
        return None
