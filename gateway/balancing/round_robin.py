"""`balancing: round_robin` (the default): each candidate in turn."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ..core.request_key import NO_KEY, RequestKey
from .replica import Replica


class RoundRobin:
    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, candidates: Sequence[Replica], key: RequestKey = NO_KEY) -> Replica:
        return candidates[next(self._counter) % len(candidates)]
