"""The swap scheduler: when a waiting swap may evict a resident model (turns on a shared slot).

Under open-loop load on models that share a slot, evicting on every arrival swaps back and
forth and serves little. Rules, with `quantum_s` = `supervisor.swap_quantum_s` and
`max_wait_s` = `supervisor.swap_max_wait_s`:

- a resident model in use keeps its slot for its quantum after it became ready (its turn): the
  waiting model's expected swap-in (its measured wake or start) times `ratio`
  (`supervisor.swap_quantum_ratio`), at most `quantum_s` (`quantum_s` when never measured), so
  that while every model is in use the slot spends at most 1/(1 + ratio) of its time swapping; in
  use = requests in flight, or one asked for within `idle_s` (`supervisor.swap_idle_s`: open-loop
  arrivals leave gaps with nothing in flight, which must not end a turn); an idle one may be
  evicted at once;
- waiting swaps go first come, first served: one may not evict a model that an older waiting
  swap also wants to evict (the older goes first);
- a swap that has waited `max_wait_s` evicts regardless of the quantum (the starvation bound).

So a waiting swap starts evicting within `max_wait_s` of its first request, then waits for the
drain (`drain_timeout_s` at most) and the wake or start. `quantum_s` 0 turns the scheduler off:
every swap evicts at once (the policy before it). Pure and clock-injected; the placer asks it
under its lock and re-plans on every state change and every gateway report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Resident:
    """A model a swap would evict: when its turn began and whether it has work in flight."""

    model: str
    resident_since: float | None
    inflight: int
    last_used: float = float("-inf")  # monotonic time of its last request (Demand.last_used)


class Turns:
    def __init__(
        self,
        quantum_s: float,
        max_wait_s: float,
        idle_s: float = 0.0,
        ratio: float = 0.0,
        swap_in_s: Callable[[str], float | None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quantum_s = quantum_s
        self.max_wait_s = max_wait_s
        self.idle_s = idle_s
        self.ratio = ratio
        self._swap_in_s = swap_in_s
        self._clock = clock
        self._waiting: dict[str, float] = {}  # model -> when its swap began waiting
        self._wants: dict[str, frozenset[str]] = {}  # model -> the victims its last plan named

    @property
    def enabled(self) -> bool:
        return self.quantum_s > 0

    def begin(self, model: str) -> None:
        """A swap of `model` starts (it waits from now)."""
        self._waiting.setdefault(model, self._clock())

    def end(self, model: str) -> None:
        """The swap of `model` evicted and queued its starts, or gave up."""
        self._waiting.pop(model, None)
        self._wants.pop(model, None)

    def waited_s(self, model: str) -> float:
        since = self._waiting.get(model)
        return 0.0 if since is None else self._clock() - since

    def waiting(self) -> dict[str, float]:
        """Each waiting swap's wait so far, oldest first."""
        now = self._clock()
        return {m: now - t for m, t in sorted(self._waiting.items(), key=lambda kv: kv[1])}

    def want(self, model: str, victims: list[str]) -> None:
        """The victims the swap of `model` needs (its plan, even while they are busy)."""
        self._wants[model] = frozenset(victims)

    def quantum(self, model: str) -> float:
        """The turn a resident gets before the swap of `model` may end it."""
        swap_in = self._swap_in_s(model)
        if swap_in is None or self.ratio <= 0:
            return self.quantum_s
        return min(self.quantum_s, self.ratio * swap_in)

    def may_evict(self, model: str, victims: list[Resident]) -> str | None:
        """None when the swap of `model` may evict `victims` now; else why it waits."""
        self.want(model, [v.model for v in victims])
        if not self.enabled or not victims:
            return None
        since = self._waiting.get(model, self._clock())
        if self.waited_s(model) >= self.max_wait_s:
            return None  # the starvation bound: no quantum holds it back any longer
        wanted = self._wants[model]
        for other, other_since in self._waiting.items():
            if other != model and other_since < since and self._wants.get(other, wanted) & wanted:
                return f"behind the older swap of {other}"
        now = self._clock()
        quantum = self.quantum(model)
        for v in victims:
            if v.resident_since is None:
                continue  # not serving yet
            if v.inflight <= 0 and now - v.last_used >= self.idle_s:
                continue  # idle: its turn is over
            held = now - v.resident_since
            if held < quantum:
                return f"{v.model} serves its quantum ({held:.1f}s of {quantum:.1f}s)"
        return None
