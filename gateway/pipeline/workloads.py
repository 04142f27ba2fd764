"""The one entry for a shaped request's `model`: alias -> ensemble, or a fallback chain.

`Workloads.serve` is what the dispatcher hands a request to (`Dispatcher.serve`). With no
aliases, ensembles, adapters or fallbacks configured it is `Dispatcher.dispatch`, unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from starlette.responses import Response

from ..upstream import ollama
from ..upstream.ollama_client import OllamaClient
from .aliases import ModelMap
from .call import Call

# vLLM's other JSON endpoints that name a `model`: proxied to its engine like chat.
EXTRA_PATHS = frozenset(
    {
        "/tokenize",
        "/detokenize",
        "/v1/rerank",
        "/rerank",
        "/v2/rerank",
        "/v1/score",
        "/score",
        "/pooling",
        "/classify",
    }
)


class DispatchFn(Protocol):
    """`Dispatcher.dispatch`: route, admission, proxy (and Ollama unless told not to)."""

    def __call__(
        self,
        call: Call,
        payload: dict[str, Any],
        priority: str | None,
        ollama: bool = True,
    ) -> Awaitable[Response]: ...


class Workloads:
    def __init__(
        self, models: ModelMap, dispatch: DispatchFn, fallback: OllamaClient | None
    ) -> None:
        self.models = models
        self.dispatch = dispatch
        self.fallback = fallback

    async def serve(self, call: Call, payload: dict[str, Any], priority: str | None) -> Response:
        from .chains import serve_chain
        from .ensembles import serve_ensemble

        if self.models.empty:
            # Ollama speaks chat, completions and embeddings only.
            ollama_ok = call.path in ollama.PATHS
            return await self.dispatch(call, payload, priority, ollama=ollama_ok)
        name = self.models.resolve(call.model)
        ensemble = self.models.ensembles.get(name)
        if ensemble is not None:
            return await serve_ensemble(self, call, payload, priority, ensemble)
        return await serve_chain(self, call, payload, priority, name)
