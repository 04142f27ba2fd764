"""Request ids and counting answers, for the one edge (`edge.py`).

`count_answer` counts the edge's answers in `orchestra_requests_total` and
`orchestra_request_duration_seconds` (through `ModelMetrics.answered`, their one writer, which
the batch sender calls for its rows), once per answer for the route table's entries that reach
a model. It records the status of
`http.response.start` once the response has ended, so every answer is counted once with the
status the client saw — a 401 from auth, a 404 for an unknown model, an upstream's 503, an Ollama
fallback's 200 alike. A response the client left before its last byte counts as 499. The model
label comes from `scope["state"]["model"]` (set by the shaper, edge/shapers.py, once the body is
read, always a configured name) and is `_unknown` before that. The same count closes the call's
usage tab (`open_tab`, gateway/usage/accounts.py): the key's ledger row and budget see every
answer once, with that status.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, cast

from ..core.call import Call, UsageTab
from ..core.errors import GatewayError, Unavailable
from ..metrics import UNKNOWN_MODEL, GatewayMetrics

if TYPE_CHECKING:
    from ..container import Gateway

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's code: the client went away before the response ended


class RequestIds:
    """The request ids of one gateway process: the client's `x-request-id` (up to 128
    characters), or a new one."""

    def __init__(self) -> None:
        # Unique per gateway process and cheap: a random 16-hex prefix and a 16-hex counter,
        # 32 hex digits like a uuid4 (a uuid4 per request cost ~2% of the CPU under load).
        self._prefix = uuid.uuid4().hex[:16]
        self._issued = 0

    def take(self, given: bytes | None) -> str:
        if given:
            request_id = given.decode("latin-1")[:128]
            if request_id:
                return request_id
        self._issued += 1
        return f"{self._prefix}{self._issued:016x}"


def client_status(status: int, ended: bool) -> int:
    """The status the client saw: `status` sent (0: nothing went out, a 500), a 499 when the
    client left before the last byte."""
    if not status:
        return 500  # the app failed before answering and so did the answer
    return status if ended else CLIENT_CLOSED


def count_answer(
    metrics: GatewayMetrics | None,
    state: dict[str, object],
    status: int,
    ended: bool,
    started: float,
) -> None:
    """One answer counted: `status` as the client saw it (`client_status`); the model label
    from the scope's state."""
    status = client_status(status, ended)
    tab = state.get("tab")
    if tab is not None:  # set by `open_tab`: the key's ledger, and its budget settled
        cast(UsageTab, tab).close(status)
    if metrics is None:
        return
    model = state.get("model") or UNKNOWN_MODEL
    metrics.model(str(model)).answered(status, started)


async def open_tab(gw: Gateway, call: Call, state: dict[str, object]) -> None:
    """A model call's usage tab (closed by `count_answer`), its budget checked: raises
    BudgetExceeded (429) when the key's budget is spent."""
    tab = gw.usage.tab(call, str(state.get("model") or UNKNOWN_MODEL))
    state["tab"] = tab
    state["call"] = call  # the audit line's: the model asked, stream or not, the body
    await tab.admit()


def shutting_down() -> GatewayError:
    return Unavailable(
        "the gateway is shutting down; retry on another instance or shortly",
        code="shutting_down",
        headers={"retry-after": "1"},
    )


def internal() -> GatewayError:
    return GatewayError("internal gateway error")
