"""The engine client's side calls (`Pool.fetch`), stubbed for the readers that use it (the
health monitor, the gauge reader): GETs answered from a table {url + path: status, or None
for a refused connection}, each with `body`; what was asked is recorded; `gate`, when set,
holds the replies back until it is set."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from orchestra.gateway.upstream.http1.pool import ConnectFailed, Fetched


class StubPool:
    def __init__(self, answers: dict[str, int | None], body: bytes = b"") -> None:
        self.answers = answers
        self.body = body
        self.asked: list[str] = []
        self.gate: asyncio.Event | None = None

    async def fetch(
        self,
        url: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float,
    ) -> Fetched:
        assert method == "GET" and timeout_s == 1.0  # every probe and scrape is bounded
        self.asked.append(url + path)
        status = self.answers.get(url + path)
        if status is None:
            raise ConnectFailed("refused")
        if self.gate is not None:
            await self.gate.wait()
        return Fetched(status, {}, self.body)
