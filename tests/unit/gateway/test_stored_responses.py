"""StoredResponses' index: bounded, pinned to what the routing table still serves, and only
for the models a call may reach."""

from __future__ import annotations

import asyncio

import pytest

from orchestra.config import OrchestraConfig
from orchestra.gateway.cluster.routing import RoutingTable
from orchestra.gateway.pipeline.responses import ResponseNotFound, StoredResponses
from orchestra.gateway.upstream.http1.pool import Pool
from orchestra.runtime import Bounded

# Nothing listens on port 9 here: a probe finds no engine holding anything.
CONFIG = OrchestraConfig.model_validate(
    {
        "servers": [
            {"name": "a", "url": "http://127.0.0.1:9"},
            {"name": "b", "url": "http://127.0.0.1:9"},
        ]
    }
)


def test_the_index_pins_bounds_and_keeps_to_the_models_asked() -> None:
    async def scenario() -> None:
        pool = Pool(4, keepalive_s=4.0, connect_s=0.5)
        try:
            stored = StoredResponses(RoutingTable(CONFIG), pool, 2, probe_timeout_s=0.5)
            stored.remember("resp_1", "a", "http://127.0.0.1:9")
            assert await stored.locate("resp_1", ["a"]) == ("a", "http://127.0.0.1:9")
            with pytest.raises(ResponseNotFound):  # model b's engines do not hold it
                await stored.locate("resp_1", ["b"])
            stored.remember("resp_2", "a", "http://127.0.0.1:9")
            stored.remember("resp_3", "a", "http://127.0.0.1:9")  # pushes resp_1 out (LRU of 2)
            assert stored.bounded() == Bounded(2, 2)  # what GET /admin/runtime reports
            with pytest.raises(ResponseNotFound):
                await stored.locate("resp_1", ["a"])  # and the probe finds no engine with it
            stored.remember("resp_4", "a", "http://127.0.0.1:8")  # an engine no longer served
            with pytest.raises(ResponseNotFound):
                await stored.locate("resp_4")
        finally:
            pool.close()

    asyncio.run(scenario())
