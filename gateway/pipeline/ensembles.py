"""Ensembles: one request fanned out to several models, answered once.

Each member goes through the normal path (its aliases and fallback chain, ensure, admission,
balancing, retries), in parallel, bounded by the ensemble's `timeout_s`.

- `all`: one reply whose `choices` hold every member's answer (each tagged `model`), `usage`
  summed; failed members are listed in `orchestra.members` and fail the whole only when all
  fail. Streaming multiplexes the members as choice indices (`ensemble_stream.py`).
- `first`: hedging: the first member to answer wins; the others are cancelled upstream (their
  connections closed). Streaming: the first member to send its first byte wins.
- `vote`: the majority of the members' normalised answers; the tally and any tie are in
  `orchestra.vote`.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from typing import Any

import orjson

from orchestra.config.workloads import EnsembleConfig

from ..core.call import REPLICA, SERVED_BY, Call
from ..core.errors import BadRequest, GatewayError
from ..core.reply import Reply
from .ensemble_parts import (
    JSON,
    Members,
    Outcome,
    all_failed,
    error_of,
    member_call,
    sum_usage,
    timed_out,
)
from .ensemble_stream import stream_all


async def run_member(wl: Members, call: Call, member: str, live: bool = False) -> Outcome:
    """One member, non-streaming (or `live`: streaming, returned once its first byte is in)."""
    try:
        reply = await wl.serve(member_call(wl, call, member, stream=live))
    except GatewayError as exc:
        error = {"message": exc.message, "type": exc.type, "code": exc.code}
        return Outcome(member, exc.status, error=error | {"status": exc.status})
    if live and reply.status == 200:
        return Outcome(member, 200, reply=reply, replica=reply.headers.get(REPLICA))
    raw = await reply.read()  # (closed: a member's stream settles once read or cut)
    if reply.status != 200:
        return Outcome(member, reply.status, error=error_of(reply.status, raw))
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
        error = {"message": "member sent a malformed reply", "type": "upstream_error"}
        return Outcome(member, 502, error=error | {"code": "bad_gateway", "status": 502})
    return Outcome(member, 200, body=parsed, replica=reply.headers.get(REPLICA))


async def _discard(outcome: Outcome) -> None:
    if outcome.reply is not None:
        await outcome.reply.aclose()


async def gather_members(
    wl: Members,
    call: Call,
    ensemble: EnsembleConfig,
    first: bool = False,
    live: bool = False,
) -> list[Outcome]:
    """Run every member; with `first`, stop at the first success and cancel the others."""
    tasks = {
        asyncio.ensure_future(run_member(wl, call, m, live)): i
        for i, m in enumerate(ensemble.models)
    }
    outcomes: list[Outcome | None] = [None] * len(tasks)
    pending = set(tasks)
    deadline = time.monotonic() + ensemble.timeout_s
    try:
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                outcomes[tasks[task]] = task.result()
            if first and any(o is not None and o.ok for o in outcomes):
                break
    finally:
        for task in pending:
            task.cancel()
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, Outcome):  # finished as it was being cancelled
                await _discard(result)
    if first:
        winners = [o for o in outcomes if o is not None and o.ok]
        for extra in winners[1:]:
            await _discard(extra)
    members = zip(outcomes, ensemble.models, strict=True)
    return [o or timed_out(m, ensemble.timeout_s) for o, m in members]


def _envelope(ensemble: EnsembleConfig, outcomes: list[Outcome]) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok and o.body is not None]
    head = ok[0].body or {}
    return {
        "id": f"ens-{uuid.uuid4().hex}",
        "object": head.get("object", "chat.completion"),
        "created": int(time.time()),
        "model": ensemble.name,
        "choices": [],
        "usage": sum_usage([o.body.get("usage") for o in ok if o.body is not None]),
        "orchestra": {
            "ensemble": ensemble.name,
            "strategy": ensemble.strategy,
            "members": [o.report() for o in outcomes],
        },
    }


def merge_all(ensemble: EnsembleConfig, outcomes: list[Outcome]) -> dict[str, Any]:
    out = _envelope(ensemble, outcomes)
    for outcome in outcomes:
        if outcome.ok and outcome.body is not None:
            for choice in outcome.body["choices"]:
                index = len(out["choices"])
                out["choices"].append({**choice, "index": index, "model": outcome.model})
    return out


_PUNCT = re.compile(r"^[\s\"'`*_.,;:!?()\[\]]+|[\s\"'`*_.,;:!?()\[\]]+$")


def normalise(text: str) -> str:
    """For votes: case, surrounding punctuation/quotes/markdown and inner spacing ignored."""
    return _PUNCT.sub("", " ".join(text.lower().split()))


def answer_of(body: dict[str, Any]) -> str:
    choice = body["choices"][0] if body.get("choices") else {}
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    return str(text if text is not None else choice.get("text") or "")


def merge_vote(ensemble: EnsembleConfig, outcomes: list[Outcome]) -> dict[str, Any]:
    out = _envelope(ensemble, outcomes)
    answers = {o.model: normalise(answer_of(o.body)) for o in outcomes if o.ok and o.body}
    tally = Counter(answers.values())
    top = max(tally.values())
    tied = [a for a, n in tally.items() if n == top]
    winner = next(m for m, a in answers.items() if a in tied)  # first member, config order
    body = next(o.body for o in outcomes if o.model == winner and o.body is not None)
    out["choices"] = [{**body["choices"][0], "index": 0, "model": winner}]
    out["orchestra"]["vote"] = {
        "winner": answers[winner],
        "votes": top,
        "tie": len(tied) > 1,
        "tied": tied if len(tied) > 1 else [],
        "tally": dict(tally),
        "answers": answers,
    }
    return out


async def serve_ensemble(wl: Members, call: Call, ensemble: EnsembleConfig) -> Reply:
    if not call.traits.ensemble:  # the route table's word: chat and completions
        raise BadRequest(
            f"ensemble `{ensemble.name}` serves chat and completions only", param="model"
        )
    headers = {**call.reply_headers, "x-orchestra-ensemble": ensemble.name}
    if call.stream and ensemble.strategy == "all":
        return await stream_all(wl, call, ensemble, headers)
    if call.stream and ensemble.strategy == "vote":
        raise BadRequest("a `vote` ensemble does not stream; send stream=false", param="stream")
    first = ensemble.strategy == "first"
    outcomes = await gather_members(wl, call, ensemble, first, call.stream)
    if not any(o.ok for o in outcomes):
        return all_failed(ensemble, outcomes, headers)
    if first:
        winner = next(o for o in outcomes if o.ok)
        headers[SERVED_BY] = wl.models.resolve(winner.model)
        if winner.reply is not None:
            winner.reply.headers.update(headers)
            return winner.reply
        usage = (winner.body or {}).get("usage")
        if call.on_usage is not None and usage is not None:
            call.on_usage(usage)  # rate limits: the answer the client got (the others were cut)
        return Reply(orjson.dumps(winner.body), 200, headers, JSON)
    merged = (
        merge_all(ensemble, outcomes)
        if ensemble.strategy == "all"
        else merge_vote(ensemble, outcomes)
    )
    if call.on_usage is not None and merged["usage"] is not None:
        call.on_usage(merged["usage"])
    headers[REPLICA] = ",".join(o.replica for o in outcomes if o.ok and o.replica)
    return Reply(orjson.dumps(merged), 200, headers, JSON)
