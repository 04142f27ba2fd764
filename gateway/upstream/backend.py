"""The seam between the pipeline and the engines: a backend forwards one call and returns the
reply (`core.reply.Reply`).

Two implementations: the OpenAI-compatible engines (vLLM, the Whisper engine, any `engine:`),
reached through the routing table, admission and the proxy (`pipeline/engines.Engines`), and
Ollama (`ollama_client.OllamaClient`: the OpenAI API translated to Ollama's). The pipeline
tries a chain's targets in order, each through its target's backend, with one rule for all of
them: a backend that cannot serve raises `Unavailable`, `UpstreamTimeout` or `Overloaded`, or
answers 5xx, and the next target serves (`pipeline.py`, step 4).
"""

from __future__ import annotations

from typing import Protocol

from ..core.call import Call
from ..core.reply import Reply

BACKEND_HEADER = "x-orchestra-backend"  # reply header: the backend's `name`


class Backend(Protocol):
    @property
    def name(self) -> str:
        """What its replies say in `x-orchestra-backend`."""
        ...

    def takes(self, call: Call) -> bool:
        """Whether it may serve `call` now (a backend known down, or one that cannot speak the
        call's API, is skipped: the chain's earlier failure stays the answer)."""
        ...

    async def forward(self, call: Call) -> Reply:
        """The reply to `call`; raises a GatewayError when it could not answer at all."""
        ...
