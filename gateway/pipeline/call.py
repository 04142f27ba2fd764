"""The call object: one request on its way through the pipeline, whatever it came from (an
HTTP request, an audio upload, a batch row, an ensemble member)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from ..balancing.key import NO_KEY, RequestKey
from ..metrics import GatewayMetrics


@dataclass(slots=True)
class Call:
    path: str
    body: bytes | aiohttp.Payload  # a Payload: a spooled multipart upload (gateway/multipart.py)
    model: str
    stream: bool
    headers: dict[str, str]  # sent upstream
    reply_headers: dict[str, str]  # sent to the client (x-request-id, ...)
    on_usage: Callable[[object], None] | None = None  # the reply's `usage` (rate-limit settling)
    route_key: RequestKey = NO_KEY  # what request-aware balancing looks at
    arrived: float = field(default_factory=time.perf_counter)  # for x-orchestra-overhead-ms
    upstream_s: float = 0.0  # time spent waiting on upstreams (excluded from the overhead)

    def usage(self, metrics: GatewayMetrics, usage: object) -> None:
        """The reply's `usage` (or None): counted in metrics and handed to `on_usage`."""
        metrics.count_usage(self.model, usage)
        if self.on_usage is not None and usage is not None:
            self.on_usage(usage)
