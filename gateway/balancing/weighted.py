"""`balancing: weighted`: smooth weighted round-robin (as in nginx): exact proportions, evenly
interleaved.

Each pick adds every candidate's weight to its credit, takes the candidate with the most credit
and charges it the total. The credits are this policy's own (by replica URL), not the
replica's: a balancer never writes to a replica.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.request_key import NO_KEY, RequestKey
from .replica import Replica

_KEEP = 64  # credits of URLs no longer seen are dropped once there are more than this many


class Weighted:
    def __init__(self) -> None:
        self._credit: dict[str, float] = {}

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        credit = self._credit
        if len(credit) > _KEEP:
            urls = {r.url for r in candidates}
            for gone in [u for u in credit if u not in urls]:
                del credit[gone]
        total = 0.0
        best = candidates[0]
        best_credit = float("-inf")
        for replica in candidates:
            value = credit.get(replica.url, 0.0) + replica.weight
            credit[replica.url] = value
            total += replica.weight
            if value > best_credit:
                best, best_credit = replica, value
        credit[best.url] = best_credit - total
        return best
