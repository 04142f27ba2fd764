"""`balancing: load_aware`: our own in-flight count plus the queue vLLM reports (other
clients' load included: the health monitor scrapes it into `Replica.load`), per weight; ties
broken round-robin."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ..core.request_key import NO_KEY, RequestKey
from .load import least_loaded, load_of
from .replica import Replica


class LoadAware:
    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        return least_loaded(candidates, next(self._counter), load_of)
