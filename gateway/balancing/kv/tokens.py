"""A request's token ids exactly as the engine computes them: the engine's own `/tokenize`.

Chat requests send `messages` (with `tools`, `chat_template_kwargs`, `add_generation_prompt`,
`continue_final_message` when given), so the engine applies the same chat template as for the
chat completion itself; completions send `prompt` (a list of token ids is used as it is, no
call). Any failure (timeout, non-200, a shape we cannot send) is None: the caller falls back.
Cost: one small HTTP call to an engine per request, measured in docs/balancing.md.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from ..replica import Replica

log = logging.getLogger(__name__)
# The engine call: the gateway's one client's `Pool.fetch` (upstream/http1), handed in by the
# container, as balancing sits below upstream and imports nothing of it. (url, method, path,
# headers, body, timeout_s) -> (status, headers, body); raises OSError (timeouts included).
Fetch = Callable[
    [str, str, str, Mapping[str, str], bytes, float],
    Awaitable[tuple[int, Mapping[str, str], bytes]],
]
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
    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

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
            status, _, reply = await self._fetch(
                replica.url, "POST", "/tokenize", headers, orjson.dumps(body), timeout_s
            )
            if status != 200:
                return None
            tokens = orjson.loads(reply).get("tokens")
        except (OSError, orjson.JSONDecodeError, AttributeError):  # OSError: TimeoutError too
            return None
        if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
            return tokens
        return None
