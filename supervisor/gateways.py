"""What each gateway last reported: its in-flight requests per engine, and which draining
engines it has taken out of rotation. The drain of an evicted engine waits on this.

An engine being evicted is first marked draining in the model table. Each gateway, on its next
sync, stops sending it new requests and from then on lists it in `draining_seen`; its
`inflight` count for that engine can then only fall. The engine is drained when every live
gateway (one that synced within `ttl_s`) has listed it and reports 0 for it. A gateway that
stops syncing stops counting after `ttl_s`, so a dead gateway never blocks a drain for longer.

Bound: a report that aged out is dropped at the next report of any gateway (each gateway
process, each worker, names itself anew at every start, so restarts would otherwise pile up),
and at most `MAX_GATEWAYS` are kept (the least recently synced goes first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from orchestra.protocol import GatewayReport
from orchestra.runtime import Bounded

from .changes import Changes

MAX_GATEWAYS = 1024  # live gateway processes (workers) one supervisor serves, at most


@dataclass
class _Seen:
    at: float
    inflight: dict[str, int] = field(default_factory=dict)
    draining_seen: frozenset[str] = frozenset()


class GatewayReports:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._by_gateway: dict[str, _Seen] = {}
        self._changes = Changes()

    def record(self, gateway_id: str, report: GatewayReport) -> None:
        now = self._clock()
        self._by_gateway.pop(gateway_id, None)  # re-inserted last: the dict is in sync order
        self._by_gateway[gateway_id] = _Seen(
            now,
            {url: max(0, n) for url, n in report.inflight.items()},
            frozenset(report.draining_seen),
        )
        horizon = now - self._ttl
        for old in [g for g, s in self._by_gateway.items() if s.at < horizon]:
            del self._by_gateway[old]
        while len(self._by_gateway) > MAX_GATEWAYS:
            del self._by_gateway[next(iter(self._by_gateway))]
        self._changes.notify()

    def bounded(self) -> Bounded:
        return Bounded(len(self._by_gateway), MAX_GATEWAYS)

    def live(self) -> dict[str, _Seen]:
        horizon = self._clock() - self._ttl
        return {g: s for g, s in self._by_gateway.items() if s.at >= horizon}

    def inflight(self, urls: Iterable[str]) -> int:
        """Requests the live gateways have in flight on these engines."""
        wanted = set(urls)
        return sum(n for s in self.live().values() for u, n in s.inflight.items() if u in wanted)

    def drained(self, urls: Iterable[str]) -> bool:
        """Every live gateway has taken these engines out of rotation and has none in flight."""
        wanted = set(urls)
        return all(
            wanted <= s.draining_seen and not any(s.inflight.get(u, 0) for u in wanted)
            for s in self.live().values()
        )

    async def wait_drained(self, urls: Iterable[str], timeout_s: float) -> bool:
        """True once drained; False when `timeout_s` passed first (or a live gateway stopped
        syncing and its report aged out, which re-checks here on the next poll)."""
        wanted = list(urls)
        deadline = self._clock() + timeout_s
        while not self.drained(wanted):
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            # Wake on every report; at least every second so an aged-out gateway is noticed.
            await self._changes.wait(self._changes.ticket(), min(remaining, 1.0))
        return True
