"""What a model call's path can do beyond being proxied, declared once per path in the route
table (`edge/routes.py`, `RouteSpec.traits`) and carried by every call made for that path
(`Call.traits`), so the floors below the edge read a capability off the call instead of keeping
path lists of their own."""

from __future__ import annotations

from dataclasses import dataclass

from .dialect import Dialect


@dataclass(frozen=True, slots=True)
class Traits:
    dialect: Dialect = "openai"  # the API it speaks: its errors' shape, whole and mid-stream
    ensemble: bool = False  # an ensemble may serve it (pipeline/ensembles.py)
    batch: bool = False  # a batch of OpenAI's Batch API may target it (batch/)
    ollama: str | None = None  # the Ollama API path the fallback translates it to, if any


PLAIN = Traits()
