"""The route table: every path the gateway serves, declared once with its policy.

The one edge (`edge.Edge`: auth, counting, the model calls' shapers) and the FastAPI app's
routes read this table; no other list of paths exists. A new endpoint is one entry here.

- `caller`: who may call it. `api_key`: a key from `gateway.api_keys` (open while none is
  configured); `admin`: the admin key (loopback only while none is configured); `open`: anyone.
- `body`: for a model call, which shaper reads the body into a pipeline call (`json`: a JSON
  object naming `model`; `multipart`: an upload whose form names `model`). Model calls are
  served by the edge and the pipeline, everything else by its FastAPI `endpoint`.
- `reaches_model`: it is proxied to an engine (or Ollama), so the edge counts its answers
  (`orchestra_requests_total`); a model call's key is charged by the pipeline (rate limits).
- `traits` (`core/traits.py`), copied into its calls: the API it speaks (`dialect`: the shape
  of the gateway's own errors, Anthropic's on Anthropic's paths (`anthropic.py`) and OpenAI's
  elsewhere, and of a failed stream's last event, `core/sse.py`), whether an ensemble may
  serve it, whether a batch may target it (`batch_endpoints`), and the Ollama API path the
  fallback translates it to.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.routing import compile_path

from ..batch import routes as batch
from ..console import routes as console
from ..core.dialect import Dialect
from ..core.traits import PLAIN, Traits
from . import admin, info, stored, usage_admin


class Caller(enum.StrEnum):
    API_KEY = "api_key"
    ADMIN = "admin"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    path: str  # Starlette's path syntax (`/v1/files/{file_id}`)
    methods: frozenset[str]
    caller: Caller
    endpoint: Callable[..., Any] | None = None  # FastAPI endpoint; None for a model call
    body: Literal["json", "multipart"] | None = None  # model calls: the shaper
    reaches_model: bool = False
    browser_prompt: bool = False  # a 401 asks a browser for the key (HTTP Basic): the console
    traits: Traits = PLAIN  # what its calls may do, and the API they speak (calls carry it)
    console: bool = False  # installed only while `gateway.console.enabled`

    @property
    def model_call(self) -> bool:
        return self.body is not None

    @property
    def dialect(self) -> Dialect:
        return self.traits.dialect


def _model_call(
    path: str, body: Literal["json", "multipart"] = "json", traits: Traits = PLAIN
) -> RouteSpec:
    """A POST that names a model: keyed, counted, charged, proxied through the pipeline."""
    return RouteSpec(
        path,
        frozenset({"POST"}),
        Caller.API_KEY,
        body=body,
        reaches_model=True,
        traits=traits,
    )


def _api(path: str, endpoint: Callable[..., Any], *methods: str) -> RouteSpec:
    return RouteSpec(path, frozenset(methods or ("GET",)), Caller.API_KEY, endpoint)


def _admin(path: str, endpoint: Callable[..., Any], method: str = "GET") -> RouteSpec:
    return RouteSpec(path, frozenset({method}), Caller.ADMIN, endpoint)


def _console(path: str, endpoint: Callable[..., Any], method: str = "GET") -> RouteSpec:
    return RouteSpec(
        path, frozenset({method}), Caller.ADMIN, endpoint, browser_prompt=True, console=True
    )


_CHAT, _GENERATE = "/api/chat", "/api/generate"

ROUTES: tuple[RouteSpec, ...] = (
    # OpenAI's model calls, and vLLM's other JSON endpoints that name a `model`
    # (Ollama's API paths: what the fallback translates each to, upstream/ollama.py)
    _model_call("/v1/chat/completions", traits=Traits(ensemble=True, batch=True, ollama=_CHAT)),
    _model_call("/v1/completions", traits=Traits(ensemble=True, batch=True, ollama=_GENERATE)),
    _model_call("/v1/embeddings", traits=Traits(batch=True, ollama="/api/embed")),
    _model_call("/tokenize"),
    _model_call("/detokenize"),
    _model_call("/v1/rerank"),
    _model_call("/rerank"),
    _model_call("/v2/rerank"),
    _model_call("/v1/score"),
    _model_call("/score"),
    _model_call("/pooling"),
    _model_call("/classify"),
    _model_call("/v1/audio/transcriptions", "multipart"),
    _model_call("/v1/audio/translations", "multipart"),
    # OpenAI's Responses API: a stored response's follow-ups go to the engine that stored it
    _model_call("/v1/responses", traits=Traits(dialect="responses")),
    RouteSpec(
        "/v1/responses/{response_id}",
        frozenset({"GET"}),
        Caller.API_KEY,
        stored.retrieve,
        reaches_model=True,
    ),
    RouteSpec(
        "/v1/responses/{response_id}/cancel",
        frozenset({"POST"}),
        Caller.API_KEY,
        stored.cancel,
        reaches_model=True,
    ),
    # Anthropic's Messages API (its error shape; `x-api-key` works as well as a bearer key)
    _model_call("/v1/messages", traits=Traits(dialect="anthropic")),
    _model_call("/v1/messages/count_tokens", traits=Traits(dialect="anthropic")),
    # the gateway's own
    _api("/v1/models", info.list_models),
    RouteSpec("/health", frozenset({"GET"}), Caller.OPEN, info.health),
    RouteSpec("/metrics", frozenset({"GET"}), Caller.OPEN, info.metrics),
    RouteSpec("/admin/status", frozenset({"GET"}), Caller.ADMIN, admin.status),
    _admin("/admin/runtime", admin.runtime),
    # the usage ledger and the keys made at run time (gateway/usage/)
    _admin("/admin/usage", usage_admin.usage),
    _admin("/admin/keys", usage_admin.list_keys),
    _admin("/admin/keys", usage_admin.create_key, "POST"),
    _admin("/admin/keys/{name}", usage_admin.delete_key, "DELETE"),
    _admin("/admin/keys/{name}/disable", usage_admin.disable_key, "POST"),
    _admin("/admin/keys/{name}/enable", usage_admin.enable_key, "POST"),
    # OpenAI's Files and Batches (rows reach models later, charged to the submitting key)
    _api("/v1/files", batch.create_file, "POST"),
    _api("/v1/files", batch.list_files),
    _api("/v1/files/{file_id}", batch.get_file),
    _api("/v1/files/{file_id}", batch.delete_file, "DELETE"),
    _api("/v1/files/{file_id}/content", batch.file_content),
    _api("/v1/batches", batch.create_batch, "POST"),
    _api("/v1/batches", batch.list_batches),
    _api("/v1/batches/{batch_id}", batch.get_batch),
    _api("/v1/batches/{batch_id}/cancel", batch.cancel_batch, "POST"),
    # the web console
    _console("/console", console.page),
    _console("/console/static/{name}", console.static),
    _console("/console/api/snapshot", console.snapshot),
    _console("/console/api/usage", console.usage),
    _console("/console/api/series", console.series),
    _console("/console/events", console.events),
    _console("/console/api/models/{name:path}/{action}", console.act, "POST"),
)


class RouteTable:
    """Lookups over ROUTES: exact paths by dict, parametrised ones by their compiled pattern."""

    def __init__(self, routes: Iterable[RouteSpec] = ROUTES) -> None:
        self.routes = tuple(routes)
        self._exact: dict[str, list[RouteSpec]] = {}
        self._patterns: list[tuple[Any, RouteSpec]] = []
        for spec in self.routes:
            if "{" in spec.path:
                self._patterns.append((compile_path(spec.path)[0], spec))
            else:
                self._exact.setdefault(spec.path, []).append(spec)
        # The edge's fast path: POSTs that name a model, by exact path.
        self.model_calls = {
            spec.path: spec for spec in self.routes if spec.model_call and "POST" in spec.methods
        }

    def batch_endpoints(self) -> dict[str, Traits]:
        """The model calls a batch may target, with the traits their rows' calls carry."""
        return {path: spec.traits for path, spec in self.model_calls.items() if spec.traits.batch}

    def lookup(self, method: str, path: str) -> RouteSpec | None:
        """The entry for a request: a model call's by one dict lookup, else `policy`."""
        if method == "POST":
            found = self.model_calls.get(path)
            if found is not None:
                return found
        return self.policy(path)

    def policy(self, path: str) -> RouteSpec | None:
        """The entry that decides who may call `path` (any method: every entry of one path
        has the same caller, which `check` enforces), or None for a path not served."""
        found = self._exact.get(path)
        if found:
            return found[0]
        for pattern, spec in self._patterns:
            if pattern.match(path):
                return spec
        return None

    def check(self) -> None:
        """Entries of one path agree on who may call it; a model call names its shaper."""
        callers: dict[str, Caller] = {}
        for spec in self.routes:
            if callers.setdefault(spec.path, spec.caller) is not spec.caller:
                raise ValueError(f"route {spec.path}: entries disagree on the caller")
            if spec.model_call == (spec.endpoint is not None):
                raise ValueError(f"route {spec.path}: a model call or an endpoint, not both")
