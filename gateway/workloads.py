"""The one entry for a proxied request's `model`: alias -> ensemble, or a fallback chain.

Hooked into the app in place of `dispatch`: with no aliases, ensembles, adapters or fallbacks
configured it is `dispatch` itself, unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from orchestra.gateway import ollama
from orchestra.gateway.chains import serve_chain
from orchestra.gateway.dispatch import dispatch
from orchestra.gateway.ensembles import serve_ensemble
from orchestra.gateway.proxy import UpstreamCall

if TYPE_CHECKING:
    from orchestra.gateway.app import Gateway

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


async def serve(
    gw: Gateway, call: UpstreamCall, payload: dict[str, Any], priority: str | None
) -> Response:
    models = gw.models
    if models.empty:
        # Ollama speaks chat, completions and embeddings only.
        return await dispatch(gw, call, payload, priority, ollama=call.path in ollama.PATHS)
    name = models.resolve(call.model)
    ensemble = models.ensembles.get(name)
    if ensemble is not None:
        return await serve_ensemble(gw, call, payload, priority, ensemble)
    return await serve_chain(gw, call, payload, priority, name)
