"""A reply's `usage` read as token counts, in either API's words: OpenAI's (`prompt_tokens`,
`completion_tokens`, `prompt_tokens_details.cached_tokens`) and Anthropic's (`input_tokens`,
`output_tokens`, `cache_read_input_tokens`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tokens:
    prompt: int = 0
    completion: int = 0
    # Of the prompt, served from the engine's prefix cache; or, for an answer the response
    # cache served (`from_cache`), all of its tokens: none was computed for this call.
    cached: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def from_cache(self) -> Tokens:
        """These tokens as the response cache served them: all cached, none new."""
        return Tokens(0, 0, self.total)

    @staticmethod
    def of(usage: object) -> Tokens | None:
        """None when `usage` carries no count at all."""
        if not isinstance(usage, dict):
            return None
        prompt = _count(usage, "prompt_tokens", "input_tokens")
        completion = _count(usage, "completion_tokens", "output_tokens")
        if prompt is None and completion is None:
            return None
        details = usage.get("prompt_tokens_details")
        cached = _count(details, "cached_tokens") if isinstance(details, dict) else None
        if cached is None:
            cached = _count(usage, "cache_read_input_tokens")
        return Tokens(prompt or 0, completion or 0, cached or 0)


def _count(usage: dict[str, object], *names: str) -> int | None:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
