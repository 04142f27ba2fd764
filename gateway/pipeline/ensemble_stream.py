"""Streaming an `all` ensemble: the members' SSE streams multiplexed as choice indices.

As OpenAI does for `n > 1`: every chunk has the ensemble's `id` and `model`; a member's choice
`i` becomes index `member * n + i` and carries the member's name in `model`. Member usage
chunks are summed into one final usage chunk (when the client asked for it). A member that
fails is reported in a chunk with no choices and `orchestra.error`; the stream goes on with the
others. Headers go out once one member has sent its first chunk, or as an error reply when
every member failed before that.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from orchestra.config.workloads import EnsembleConfig
from orchestra.protocol import parse_error

from ..core import sse
from ..core.call import Call
from ..core.errors import GatewayError
from ..core.reply import SSE, IterStream, Reply
from .ensemble_parts import (
    Members,
    Outcome,
    all_failed,
    error_of,
    member_call,
    sum_usage,
    timed_out,
)

# queue items: (member index, chunk dict) | (member index, Outcome when it ended)
_Item = tuple[int, dict[str, Any] | Outcome]


async def _pump(
    wl: Members,
    call: Call,
    index: int,
    member: str,
    queue: asyncio.Queue[_Item],
) -> None:
    reply: Reply | None = None
    usage: Any = None
    outcome: Outcome
    try:
        try:
            reply = await wl.serve(member_call(wl, call, member, stream=True))
        except GatewayError as exc:
            error = {"message": exc.message, "type": exc.type, "code": exc.code}
            await queue.put((index, Outcome(member, exc.status, error=error)))
            return
        if reply.status != 200:
            raw = await reply.read()
            error = error_of(reply.status, raw)
            await queue.put((index, Outcome(member, reply.status, error=error)))
            return
        parser = sse.SseParser()
        async for chunk in reply.chunks():
            for data, _ in parser.feed(chunk):
                if data == sse.DONE_DATA:
                    continue
                event = orjson.loads(data)
                if not isinstance(event, dict) or "error" in event:
                    found = parse_error(event if isinstance(event, dict) else None)
                    error = found.model_dump() if found else {"message": "malformed event"}
                    await queue.put((index, Outcome(member, 502, error=error)))
                    return
                if not event.get("choices"):
                    usage = event.get("usage") or usage
                    continue
                await queue.put((index, event))
        outcome = Outcome(member, 200, body={"usage": usage})
        await queue.put((index, outcome))
    except orjson.JSONDecodeError:
        error = {"message": "member sent a malformed SSE event", "type": "upstream_error"}
        await queue.put((index, Outcome(member, 502, error=error)))
    finally:
        if reply is not None:
            await reply.aclose()  # a member cut short (cancelled, failed) settles here


async def stream_all(
    wl: Members,
    call: Call,
    ensemble: EnsembleConfig,
    headers: dict[str, str],
) -> Reply:
    queue: asyncio.Queue[_Item] = asyncio.Queue()
    tasks = [
        asyncio.create_task(_pump(wl, call, i, member, queue))
        for i, member in enumerate(ensemble.models)
    ]
    deadline = time.monotonic() + ensemble.timeout_s
    ended: dict[int, Outcome] = {}
    first: _Item | None = None
    try:
        while first is None and len(ended) < len(tasks):
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                item = await queue.get()
            if isinstance(item[1], Outcome):
                ended[item[0]] = item[1]
            else:
                first = item
    except BaseException as exc:
        await _cancel(tasks)
        if not isinstance(exc, TimeoutError):
            raise
    if first is None:
        outcomes = [
            ended.get(i) or timed_out(m, ensemble.timeout_s) for i, m in enumerate(ensemble.models)
        ]
        return all_failed(ensemble, outcomes, headers)
    payload = call.payload
    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    events = _events(ensemble, payload, tasks, queue, first, ended, deadline, include_usage)
    reply = Reply(IterStream(events), 200, headers, SSE)
    for task in tasks:  # a stream never started (the client left first) runs no `finally`
        reply.on_close(task.cancel)
    return reply


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _events(
    ensemble: EnsembleConfig,
    payload: dict[str, Any],
    tasks: list[asyncio.Task[None]],
    queue: asyncio.Queue[_Item],
    first: _Item,
    ended: dict[int, Outcome],
    deadline: float,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    ens_id = f"ens-{uuid.uuid4().hex}"
    created = int(time.time())
    n = payload.get("n")
    per_member = n if isinstance(n, int) and n > 0 else 1
    obj = "chat.completion.chunk"

    def head(extra: dict[str, Any]) -> dict[str, Any]:
        return {"id": ens_id, "object": obj, "created": created, "model": ensemble.name} | extra

    def reported(index: int, outcome: Outcome) -> bytes:
        info = {"member": outcome.model, "index": index, "error": outcome.error}
        return sse.json_frame(head({"choices": [], "orchestra": info}))

    try:
        for index, outcome in ended.items():
            if not outcome.ok:
                yield reported(index, outcome)
        item: _Item | None = first
        while len(ended) < len(tasks):
            if item is None:
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        item = await queue.get()
                except TimeoutError:
                    break
            index, value = item
            item = None
            if isinstance(value, Outcome):
                ended[index] = value
                if not value.ok:
                    yield reported(index, value)
                continue
            obj = str(value.get("object") or obj)
            member = ensemble.models[index]
            choices = [
                {**c, "index": index * per_member + int(c.get("index", 0)), "model": member}
                for c in value["choices"]
            ]
            yield sse.json_frame(head({"choices": choices}))
        outcomes = [
            ended.get(i) or timed_out(m, ensemble.timeout_s) for i, m in enumerate(ensemble.models)
        ]
        for i, outcome in enumerate(outcomes):
            if i not in ended:
                yield reported(i, outcome)
        summary: dict[str, Any] = {
            "choices": [],
            "orchestra": {
                "ensemble": ensemble.name,
                "strategy": "all",
                "members": [o.report() for o in outcomes],
            },
        }
        if include_usage:
            usages = [o.body.get("usage") for o in outcomes if o.ok and o.body is not None]
            summary["usage"] = sum_usage(usages)
        yield sse.json_frame(head(summary))
        yield sse.DONE
    finally:
        await _cancel(tasks)
