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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from orchestra.protocol import error_json
from orchestra.workload_config import EnsembleConfig

from ..edge.errors import BadRequest, GatewayError
from .call import Call
from .chains import SERVED_BY, serve_chain
from .inproc import Drain

if TYPE_CHECKING:
    from .workloads import Workloads

ENSEMBLE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
_JSON = "application/json"


@dataclass
class Outcome:
    model: str  # the member as configured
    status: int
    body: dict[str, Any] | None = None  # a 200 reply
    error: dict[str, Any] | None = None  # {"message", "type", "code"} of a failed member
    response: Response | None = None  # `first` streaming: the winner's live response

    @property
    def ok(self) -> bool:
        return self.status == 200 and (self.body is not None or self.response is not None)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "status": self.status}
        if self.error is not None:
            out["error"] = self.error
        elif self.body is not None:
            out["usage"] = self.body.get("usage")
        return out


def member_call(
    wl: Workloads, call: Call, payload: dict[str, Any], member: str, stream: bool
) -> tuple[Call, dict[str, Any], str]:
    name = wl.models.resolve(member)
    body = {**payload, "model": name, "stream": stream}
    if stream:
        body["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
    else:
        body.pop("stream_options", None)
    sub = Call(
        path=call.path,
        body=orjson.dumps(body),
        model=name,
        stream=stream,
        headers=call.headers,
        reply_headers={},
    )
    return sub, body, name


def error_of(status: int, raw: bytes) -> dict[str, Any]:
    try:
        error = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if not isinstance(error, dict):
        error = {"message": raw[:300].decode("utf-8", "replace"), "type": "upstream_error"}
    return {k: error.get(k) for k in ("message", "type", "code")} | {"status": status}


async def run_member(
    wl: Workloads,
    call: Call,
    payload: dict[str, Any],
    priority: str | None,
    member: str,
    live: bool = False,
) -> Outcome:
    """One member, non-streaming (or `live`: streaming, returned once its first byte is in)."""
    sub, body, name = member_call(wl, call, payload, member, stream=live)
    try:
        response = await serve_chain(wl, sub, body, priority, name)
    except GatewayError as exc:
        error = {"message": exc.message, "type": exc.type, "code": exc.code}
        return Outcome(member, exc.status, error=error | {"status": exc.status})
    if live and response.status_code == 200:
        return Outcome(member, 200, response=response)
    drain = Drain(response)
    try:
        raw = await drain.body()
    finally:
        await drain.abort()
    if response.status_code != 200:
        return Outcome(member, response.status_code, error=error_of(response.status_code, raw))
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
        error = {"message": "member sent a malformed reply", "type": "upstream_error"}
        return Outcome(member, 502, error=error | {"code": "bad_gateway", "status": 502})
    return Outcome(member, 200, body=parsed)


def timed_out(member: str, seconds: float) -> Outcome:
    error = {
        "message": f"member `{member}` did not answer within {seconds:g}s",
        "type": "timeout",
        "code": "ensemble_timeout",
        "status": 504,
    }
    return Outcome(member, 504, error=error)


async def _discard(outcome: Outcome) -> None:
    if outcome.response is not None:
        await Drain(outcome.response).abort()


async def gather_members(
    wl: Workloads,
    call: Call,
    payload: dict[str, Any],
    priority: str | None,
    ensemble: EnsembleConfig,
    first: bool = False,
    live: bool = False,
) -> list[Outcome]:
    """Run every member; with `first`, stop at the first success and cancel the others."""
    tasks = {
        asyncio.ensure_future(run_member(wl, call, payload, priority, m, live)): i
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


def sum_usage(usages: list[Any]) -> dict[str, int] | None:
    total: Counter[str] = Counter()
    seen = False
    for usage in usages:
        if isinstance(usage, dict):
            seen = True
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                if isinstance(usage.get(key), int):
                    total[key] += usage[key]
    if not seen:
        return None
    return {k: total[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def all_failed(
    ensemble: EnsembleConfig, outcomes: list[Outcome], headers: dict[str, str]
) -> Response:
    statuses = {o.status for o in outcomes}
    status = statuses.pop() if len(statuses) == 1 else 502
    detail = "; ".join(f"{o.model}: {(o.error or {}).get('message')}" for o in outcomes)
    body = orjson.loads(
        error_json(
            f"every member of ensemble `{ensemble.name}` failed: {detail}",
            "upstream_error",
            "ensemble_failed",
        )
    )
    body["orchestra"] = {"ensemble": ensemble.name, "members": [o.report() for o in outcomes]}
    return Response(orjson.dumps(body), status, headers=headers, media_type=_JSON)


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


async def serve_ensemble(
    wl: Workloads,
    call: Call,
    payload: dict[str, Any],
    priority: str | None,
    ensemble: EnsembleConfig,
) -> Response:
    if call.path not in ENSEMBLE_PATHS:
        raise BadRequest(
            f"ensemble `{ensemble.name}` serves chat and completions only", param="model"
        )
    headers = {**call.reply_headers, "x-orchestra-ensemble": ensemble.name}
    if call.stream and ensemble.strategy == "all":
        from .ensemble_stream import stream_all

        return await stream_all(wl, call, payload, priority, ensemble, headers)
    if call.stream and ensemble.strategy == "vote":
        raise BadRequest("a `vote` ensemble does not stream; send stream=false", param="stream")
    first = ensemble.strategy == "first"
    outcomes = await gather_members(wl, call, payload, priority, ensemble, first, call.stream)
    if not any(o.ok for o in outcomes):
        return all_failed(ensemble, outcomes, headers)
    if first:
        winner = next(o for o in outcomes if o.ok)
        headers[SERVED_BY] = wl.models.resolve(winner.model)
        if winner.response is not None:
            winner.response.headers.update(headers)
            return winner.response
        usage = (winner.body or {}).get("usage")
        if call.on_usage is not None and usage is not None:
            call.on_usage(usage)  # rate limits: the answer the client got (the others were cut)
        return Response(orjson.dumps(winner.body), headers=headers, media_type=_JSON)
    merged = (
        merge_all(ensemble, outcomes)
        if ensemble.strategy == "all"
        else merge_vote(ensemble, outcomes)
    )
    if call.on_usage is not None and merged["usage"] is not None:
        call.on_usage(merged["usage"])
    return Response(orjson.dumps(merged), headers=headers, media_type=_JSON)
