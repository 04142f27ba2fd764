"""What a request-aware policy may look at: the parsed body and the raw request headers.

Built for every proxied request, so it only holds references; policies read what they need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class RequestKey:
    payload: dict[str, Any]
    headers: Sequence[tuple[bytes, bytes]] = ()  # ASGI scope headers (lower-case names)
    tokens: tuple[int, ...] | None = None  # the prompt's token ids, when a policy prepared them

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


NO_KEY = RequestKey({})
