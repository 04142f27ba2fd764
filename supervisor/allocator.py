"""GPU placement, as a pure function: which GPUs a model gets and which models must make room.

Rules: pinned GPUs (`gpu_ids`) are honoured exactly, so whoever holds them is a victim; unpinned
engines take free GPUs (lowest ids first); when free GPUs are short, the least recently used
holders are chosen, then any victim not needed after all is spared (most recently used first).
A busy holder (starting, stopping, swapping) is never chosen unless `force`; one serving
requests is chosen only after every idle one (it is drained before it stops). With
`max_resident`, the least recently used resident models also make room for one more.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Holder:
    """A resident model: the GPUs its active engines occupy."""

    model: str
    gpus: frozenset[int]
    last_used: float
    busy: bool = False
    serving: bool = False  # a gateway has requests in flight on it


@dataclass(frozen=True)
class Need:
    """One engine to place: exactly `pins`, or any `count` GPUs (0 = a CPU engine)."""

    pins: tuple[int, ...] | None = None
    count: int = 0


@dataclass
class Plan:
    assignment: list[list[int]]  # GPUs per Need, in order
    victims: list[str] = field(default_factory=list)


class Unplaceable(Exception):
    """No plan now. `permanent`: never possible with these GPUs (else: busy victims)."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def plan(
    gpus: list[int],
    holders: list[Holder],
    needs: list[Need],
    *,
    max_resident: int | None = None,
    force: bool = False,
) -> Plan:
    """Place `needs` (one model's engines) on `gpus`, given the other resident models."""
    known = set(gpus)
    pinned = [g for n in needs for g in (n.pins or ())]
    count = sum(n.count for n in needs if n.pins is None)
    if missing := sorted(set(pinned) - known):
        raise Unplaceable(f"pinned GPUs {missing} are not on this host (GPUs: {gpus})", True)
    if len(set(pinned)) != len(pinned):
        raise Unplaceable(f"GPUs pinned twice: {sorted(pinned)}", True)
    if len(pinned) + count > len(gpus):
        total = len(pinned) + count
        raise Unplaceable(f"needs {total} GPUs, the host has {len(gpus)}", True)

    victims = [h for h in holders if h.gpus & set(pinned)]
    _check_evictable(victims, force, f"pinned GPUs {sorted(set(pinned))}")
    victims += _lru_victims(known, holders, victims, set(pinned), count, force)
    victims += _resident_victims(holders, victims, max_resident, force)

    occupied = set().union(*(h.gpus for h in holders if h not in victims))
    free = sorted(known - occupied - set(pinned))
    assignment: list[list[int]] = []
    for need in needs:
        if need.pins is not None:
            assignment.append(list(need.pins))
        else:
            assignment.append(free[: need.count])
            free = free[need.count :]
    return Plan(assignment, [v.model for v in victims])


def _check_evictable(victims: list[Holder], force: bool, what: str) -> None:
    busy = [v.model for v in victims if v.busy]
    if busy and not force:
        raise Unplaceable(f"{what} held by busy model(s) {busy}", False)


def _lru_victims(
    known: set[int],
    holders: list[Holder],
    chosen: list[Holder],
    pinned: set[int],
    count: int,
    force: bool,
) -> list[Holder]:
    """Least recently used holders whose GPUs make up the unpinned shortfall."""
    occupied = set().union(*(h.gpus for h in holders if h not in chosen))
    free = len(known - occupied - pinned)
    if free >= count:
        return []
    candidates = sorted(
        (h for h in holders if h not in chosen and h.gpus - pinned),
        key=lambda h: (h.busy, h.serving, h.last_used),
    )
    picked: list[Holder] = []
    for holder in candidates:
        if free >= count:
            break
        if holder.busy and not force:
            raise Unplaceable(
                f"needs {count} free GPUs, {free} can be freed without evicting busy "
                f"model(s) {[h.model for h in candidates if h.busy]}",
                False,
            )
        picked.append(holder)
        free += len(holder.gpus - pinned)
    # Spare victims that turn out unnecessary, keeping the more recently used ones.
    for holder in sorted(picked, key=lambda h: h.last_used, reverse=True):
        if free - len(holder.gpus - pinned) >= count:
            picked.remove(holder)
            free -= len(holder.gpus - pinned)
    return picked


def _resident_victims(
    holders: list[Holder], chosen: list[Holder], max_resident: int | None, force: bool
) -> list[Holder]:
    """Least recently used models to stop so that one more fits under `max_resident`."""
    if max_resident is None:
        return []
    remaining = sorted(
        (h for h in holders if h not in chosen), key=lambda h: (h.serving, h.last_used)
    )
    excess = len(remaining) + 1 - max_resident
    if excess <= 0:
        return []
    idle = [h for h in remaining if force or not h.busy]
    if len(idle) < excess:
        busy = [h.model for h in remaining if h.busy]
        raise Unplaceable(f"max_resident={max_resident} reached and {busy} are busy", False)
    return idle[:excess]
