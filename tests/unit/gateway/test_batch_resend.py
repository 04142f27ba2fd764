"""A batch row's resend is back-pressure only (`batch/runner.py`): a row refused for room (429:
nothing reached an engine) is sent again, up to `row_attempts`; a 503 (the pipeline's verdict
after the proxy's retries and the chain) cuts the pacer but is final, as is any other answer."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from orchestra.config import BatchConfig
from orchestra.gateway.batch.concurrency import ModelLimit
from orchestra.gateway.batch.runner import BatchRunner
from orchestra.gateway.batch.store import Row


class Sender:
    """Answers each send with the next status of `statuses`."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.sent: list[str] = []

    async def __call__(
        self, path: str, body: bytes, model: str, request_id: str, owner: str | None
    ) -> tuple[int, bytes]:
        self.sent.append(request_id)
        return self.statuses[len(self.sent) - 1], b"{}"


@pytest.mark.parametrize(
    ("statuses", "sends", "final"),
    [
        ([429, 429, 200], 3, 200),  # refused for room: sent again
        ([429, 429, 429], 3, 429),  # at most row_attempts sends
        ([503, 200], 1, 503),  # no engine could take it after the pipeline's retries: final
        ([500, 200], 1, 500),  # an engine's failure: final
    ],
)
def test_only_a_refusal_for_room_is_sent_again(statuses: list[int], sends: int, final: int) -> None:
    async def go() -> None:
        send = Sender(statuses)
        config = BatchConfig(row_attempts=3, row_backoff_s=0)
        runner = BatchRunner(cast(Any, None), send, cast(Any, None), config, lambda _: True)
        limit = ModelLimit(4, 16)
        limit.limit = 16
        batch = {"id": "b", "endpoint": "/v1/chat/completions"}
        row = Row(1, "row-1", "m", b"{}")
        status, _, request_id = await runner._attempts(batch, row, limit, None)
        assert (status, len(send.sent)) == (final, sends)
        assert request_id == send.sent[-1]
        if statuses[0] in (429, 503):
            assert limit.limit < 16  # back-pressure: the pacer was cut

    asyncio.run(go())
