"""The names clients send, resolved: aliases, fallback chains, LoRA adapters, ensembles.

Pure lookups built from config once (in the app's lifespan). A request's `model` resolves to
an ensemble, or to a chain of targets: each target is the route (server) that serves it, the
name sent upstream in the body (the server's name, or the adapter's, which its base serves) and
the backend that forwards it (`upstream/backend.py`): the engines, or, as the chain's last
target, Ollama for the first model of the chain that `fallback.ollama.models` maps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from orchestra.config import OrchestraConfig
from orchestra.config.workloads import EnsembleConfig, fallback_chain

ENGINES = "engines"  # the OpenAI-compatible engines of the routing table (pipeline/engines.py)
OLLAMA = "ollama"  # the Ollama fallback (upstream/ollama_client.py)


@dataclass(frozen=True, slots=True)
class Target:
    route: str  # the server (routing table entry) whose engines serve it
    upstream_name: str  # the `model` the engine knows: the server's or the adapter's name
    backend: str = ENGINES  # which backend forwards it

    @property
    def served_by(self) -> str:
        """Its `x-orchestra-served-by` (and a fallback pair's label)."""
        return self.upstream_name if self.backend == ENGINES else f"{self.backend}:{self.route}"


class ModelMap:
    def __init__(self, config: OrchestraConfig, registry: CollectorRegistry) -> None:
        self.aliases = dict(config.aliases)
        self.ensembles: dict[str, EnsembleConfig] = {e.name: e for e in config.ensembles}
        # adapter name -> base server name
        self.adapters: dict[str, str] = {
            adapter.name: server.name
            for server in config.all_servers
            for adapter in server.adapters
        }
        self._fallbacks = dict(config.fallbacks)
        ollama = config.fallback.ollama
        self._ollama = frozenset(ollama.models if ollama is not None else ())
        self._chains: dict[str, list[Target]] = {}
        self.fallback_pairs = Counter(
            "orchestra_model_fallbacks",
            "Requests served by the next model of a fallback chain, by pair and reason.",
            ["from_model", "to_model", "reason"],
            registry=registry,
        )

    @property
    def empty(self) -> bool:
        return not (self.aliases or self.ensembles or self.adapters or self._fallbacks)

    def resolve(self, name: str) -> str:
        """An alias to its target; any other name unchanged."""
        return self.aliases.get(name, name)

    def ensemble(self, name: str) -> EnsembleConfig | None:
        return self.ensembles.get(self.resolve(name))

    def target(self, name: str) -> Target:
        base = self.adapters.get(name)
        return Target(route=base, upstream_name=name) if base else Target(name, name)

    def chain(self, name: str) -> list[Target]:
        """The targets to try in order for a (resolved, non-ensemble) model name."""
        found = self._chains.get(name)
        if found is None:
            found = [self.target(n) for n in fallback_chain(name, self._fallbacks)]
            mapped = next((t for t in found if t.route in self._ollama), None)
            if mapped is not None:
                found.append(Target(mapped.route, mapped.route, OLLAMA))
            self._chains[name] = found
        return found

    def serves(self, name: str, route: Callable[[str], object | None]) -> bool:
        """Whether a call naming `name` has somewhere to go: an ensemble, or a chain whose
        first target is a server `route` knows."""
        resolved = self.resolve(name)
        return resolved in self.ensembles or route(self.target(resolved).route) is not None

    def chains_held(self) -> int:
        """Chains made so far: one per name that had somewhere to go (`serves`)."""
        return len(self._chains)

    def adapter_base(self, name: str) -> str | None:
        return self.adapters.get(name)

    def sync_adapters(self, base: str, names: list[str]) -> None:
        """The supervisor's word on `base`'s adapters (config and loaded at run time)."""
        current = {n for n, b in self.adapters.items() if b == base}
        if current == set(names):
            return
        for name in current - set(names):
            del self.adapters[name]
        for name in names:
            self.adapters.setdefault(name, base)
        self._chains.clear()

    def cards(self, created: int | None = None) -> list[dict[str, Any]]:
        """`/v1/models` entries for the names that are not servers."""
        created = created or int(time.time())
        out: list[dict[str, Any]] = []

        def card(name: str, **extra: Any) -> dict[str, Any]:
            return {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "orchestra",
                **extra,
            }

        for name, base in self.adapters.items():
            out.append(card(name, parent=base, kind="adapter"))
        for name, target in self.aliases.items():
            out.append(card(name, parent=target, kind="alias"))
        for name, ensemble in self.ensembles.items():
            out.append(
                card(name, kind="ensemble", members=ensemble.models, strategy=ensemble.strategy)
            )
        return out
