"""One engine URL in a model's rotation, and the counters the rest of the gateway keeps on it.

Who writes what (a balancer writes none of it): the proxy owns `outstanding` and
`consecutive_500s`; the health monitor owns `healthy`, `retry_at`, `down_reason` and `load`;
the routing table owns `api_key` (from the supervisor). A policy's own state lives in the
policy object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(eq=False)
class Replica:
    url: str
    weight: float = 1.0
    outstanding: int = 0  # requests this gateway has in flight to it
    healthy: bool = True
    retry_at: float = 0.0  # monotonic time of the next health probe while unhealthy
    down_reason: str = ""
    consecutive_500s: int = 0
    load: float = 0.0  # vLLM's running + waiting requests, scraped (load-reading policies)
    api_key: str | None = field(default=None, repr=False)  # the engine's --api-key, if any
    address: str = field(init=False, repr=False)  # `host:port` of `url` (the reply header)

    def __post_init__(self) -> None:
        self.address = urlsplit(self.url).netloc
