"""Reading the ledger for people: `GET /admin/usage` (and `orchestra usage`, which calls it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from typing import Any

from ..core.errors import BadRequest
from .store import COUNTS, UsageStore

_AGO = re.compile(r"^(\d+)([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str | None, now: float) -> int:
    """`7d`, `24h`, `30m`, `2w` ago, or a date (`2026-12-01`, ISO 8601): epoch seconds.
    None: the last 7 days."""
    if value is None or not value.strip():
        return int(now) - 7 * 86400
    value = value.strip()
    ago = _AGO.match(value)
    if ago:
        return int(now) - int(ago.group(1)) * _UNIT_S[ago.group(2)]
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"since must be like 7d, 24h, 30m or an ISO date, got {value!r}", param="since"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


async def report(
    store: UsageStore, since: str | None, key: str | None, model: str | None
) -> dict[str, Any]:
    """The ledger's hourly rows from `since` on, and their totals per key and model."""
    start = parse_since(since, time.time())
    rows = await asyncio.to_thread(store.rows, start, key, model)
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        total = totals.setdefault(
            (row["key"], row["model"]), {"key": row["key"], "model": row["model"]}
        )
        for name in COUNTS:
            total[name] = total.get(name, 0) + row[name]
    return {"since": start, "rows": rows, "totals": list(totals.values())}
