"""`balancing: least_outstanding`: fewest requests in flight from this gateway, per weight;
ties broken round-robin so idle replicas share the work."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ..core.request_key import NO_KEY, RequestKey
from .load import least_loaded, outstanding_of
from .replica import Replica


class LeastOutstanding:
    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        return least_loaded(candidates, next(self._counter), outstanding_of)
