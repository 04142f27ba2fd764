"""Stored responses (OpenAI's Responses API): a follow-up goes to the engine that stored it.

vLLM keeps a stored response in the memory of the engine that made it
(`VLLM_ENABLE_RESPONSES_API_STORE=1`), so a `previous_response_id` follow-up, a retrieve
(`GET /v1/responses/{id}`) and a cancel (`POST /v1/responses/{id}/cancel`) must reach that
engine and no other. `StoredResponses` learns response id -> (model, engine URL) from the
answers to `POST /v1/responses` (the JSON body's `id`, or the first event of a stream) and pins
such calls to that engine. Its index is a cache, bounded (`gateway.responses.max_stored` ids,
LRU; about 200 bytes each, 10 MB at the default 50,000): an id it does not hold (another worker
or gateway made it, or it was evicted) is looked up by asking the candidate engines
(`GET /v1/responses/{id}`, the one that answers 200 holds it). An engine that is gone
(restarted, swapped out, removed) takes its responses with it: the answer is an OpenAI-shaped
404, never another engine's reply.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterable

import orjson

from orchestra.runtime import Bounded

from ..balancing.balancer import Replica
from ..cluster.routing import ModelRoute, RoutingTable
from ..core.call import Call
from ..core.errors import NotFound
from ..core.reply import Reply, Stream, Write
from ..upstream.http1.pool import Pool
from ..upstream.proxy import upstream_headers

PATH = "/v1/responses"
_ID_IN_STREAM = re.compile(rb'"id"\s*:\s*"(resp_[^"]+)"')
_SNIFF_BYTES = 16384  # the first event (`response.created`) carries the id


class ResponseNotFound(NotFound):
    code = "response_not_found"


class StoredResponses:
    def __init__(
        self,
        table: RoutingTable,
        pool: Pool,
        max_stored: int,
        probe_timeout_s: float,
    ) -> None:
        self._table = table
        self._pool = pool
        self._max = max_stored
        self._probe_timeout_s = probe_timeout_s
        self._where: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> (model, url)

    @staticmethod
    def stored_id(call: Call) -> str | None:
        """The stored response `call` needs: a retrieve's or cancel's, or a follow-up's."""
        if call.response_id is not None:
            return call.response_id
        if call.path == PATH:
            previous = call.payload.get("previous_response_id")
            return previous if isinstance(previous, str) and previous else None
        return None

    def bounded(self) -> Bounded:
        return Bounded(len(self._where), self._max)

    def remember(self, response_id: str, model: str, url: str) -> None:
        self._where[response_id] = (model, url)
        self._where.move_to_end(response_id)
        while len(self._where) > self._max:
            self._where.popitem(last=False)

    async def locate(
        self, response_id: str, models: Iterable[str] | None = None
    ) -> tuple[str, str]:
        """(model, engine URL) of the engine holding `response_id`, among `models`' engines
        (every model's when None)."""
        names = list(self._table.routes if models is None else models)
        known = self._where.get(response_id)
        if known is not None and known[0] in names:  # else: another model's, ask these
            model, url = known
            route = self._table.get(model)
            if route is not None and _replica(route, url) is not None:
                self._where.move_to_end(response_id)
                return known
            del self._where[response_id]
            raise gone(response_id)  # its engine left the table: so did the response
        for name in names:
            route = self._table.get(name)
            for replica in route.replicas if route is not None else ():
                if await self._holds(replica, response_id):
                    self.remember(response_id, name, replica.url)
                    return name, replica.url
        raise gone(response_id)

    async def _holds(self, replica: Replica, response_id: str) -> bool:
        try:
            reply = await self._pool.fetch(
                replica.url,
                "GET",
                f"{PATH}/{response_id}",  # the pool percent-encodes what needs it
                upstream_headers({}, replica),
                b"",
                self._probe_timeout_s,
            )
        except OSError:  # refused, lost, timed out (TimeoutError is one)
            return False
        return reply.status == 200

    def learn(self, call: Call, reply: Reply) -> Reply:
        """Remember the id of a response `call` (a POST /v1/responses) just created."""
        url = call.answered_by
        if url is None or reply.status != 200 or call.method != "POST":
            return reply
        model = call.model

        def found(response_id: str) -> None:
            self.remember(response_id, model, url)

        if isinstance(reply.body, Stream):
            return reply.with_body(_Sniffed(reply.body, found))
        try:
            stored = orjson.loads(reply.body).get("id")
        except (orjson.JSONDecodeError, AttributeError):
            return reply
        if isinstance(stored, str):
            found(stored)
        return reply


class _Sniffed(Stream):
    """A stream whose first bytes are searched for the response's id (the first event,
    `response.created`, carries it); its parts pass unchanged, pushed or iterated."""

    __slots__ = ("_found", "_inner", "_made", "_seen")

    def __init__(self, inner: Stream, found: Callable[[str], None]) -> None:
        self._inner = inner
        self._found = found
        self._seen: bytes | None = b""  # None: found, or looked far enough
        self._made: AsyncGenerator[bytes, None] | None = None

    def _look(self, chunk: bytes) -> None:
        if self._seen is None:
            return
        seen = self._seen + chunk
        match = _ID_IN_STREAM.search(seen)
        if match is not None:
            self._found(match.group(1).decode())
        self._seen = seen if match is None and len(seen) < _SNIFF_BYTES else None

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        if self._made is None:
            self._made = self._pull()
        return self._made

    async def _pull(self) -> AsyncGenerator[bytes, None]:
        async for chunk in self._inner:
            self._look(chunk)
            yield chunk

    async def push(self, write: Write) -> None:
        async def looked(data: bytes, more: bool) -> None:
            self._look(data)
            await write(data, more)

        await self._inner.push(looked)

    def stop(self) -> None:
        self._inner.stop()

    async def aclose(self) -> None:
        if self._made is not None:
            await self._made.aclose()
        await self._inner.aclose()


def _replica(route: ModelRoute, url: str) -> Replica | None:
    return next((r for r in route.replicas if r.url == url), None)


def pinned_route(route: ModelRoute, url: str) -> ModelRoute | None:
    """`route` narrowed to the one engine at `url` (its own Replica: counters are shared), or
    None when that engine no longer serves. Not managed: a vanished engine is not re-ensured
    for it (a new engine would not hold the response)."""
    replica = _replica(route, url)
    if replica is None:
        return None
    return ModelRoute(
        name=route.name,
        managed=False,
        policy=route.policy,
        replicas=[replica],
        balancer=route.balancer,
        reported_state=route.reported_state,
    )


def gone(response_id: str) -> ResponseNotFound:
    return ResponseNotFound(
        f"No response found with id '{response_id}': the engine that stored it is not serving "
        "(restarted, swapped out or removed), or it never existed.",
        param="response_id",
    )
