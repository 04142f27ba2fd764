"""orchestra/runtime.py: the figures `GET /admin/runtime` answers on both processes."""

from __future__ import annotations

import asyncio
from typing import Any

from orchestra.runtime import Bounded, figures


def test_figures_count_this_loops_tasks_and_list_each_map_against_its_bound() -> None:
    async def scenario() -> dict[str, Any]:
        parked = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
        try:
            return figures({"b": Bounded(3, 2), "a": Bounded(1, 4) + Bounded(1, 4)})
        finally:
            for task in parked:
                task.cancel()
            await asyncio.gather(*parked, return_exceptions=True)

    got = asyncio.run(scenario())
    assert got["tasks"] == 4  # the three parked and the one asking
    assert got["threads"] >= 1 and got["gc_objects"] > 1000
    assert got["maps"] == {"a": {"size": 2, "bound": 8}, "b": {"size": 3, "bound": 2}}
    assert list(got["maps"]) == ["a", "b"]  # sorted: samples compare line by line
    assert not Bounded(3, 2).within and Bounded(2, 2).within
