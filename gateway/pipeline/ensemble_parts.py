"""The parts every ensemble strategy shares: the member call, a member's outcome, failures.

See ensembles.py for the strategies; ensemble_stream.py streams `all`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from orchestra.config.workloads import EnsembleConfig
from orchestra.protocol import error_dict, parse_error

from ..core.call import Call
from ..core.reply import JSON, Reply
from .aliases import ModelMap


class Members(Protocol):
    """What runs the members: the pipeline (each member enters it like any call)."""

    models: ModelMap

    async def serve(self, call: Call) -> Reply: ...


@dataclass
class Outcome:
    model: str  # the member as configured
    status: int
    body: dict[str, Any] | None = None  # a 200 reply
    error: dict[str, Any] | None = None  # {"message", "type", "code"} of a failed member
    reply: Reply | None = None  # `first` streaming: the winner's live reply (to close if unused)
    replica: str | None = None  # the engine that answered (its x-orchestra-replica)

    @property
    def ok(self) -> bool:
        return self.status == 200 and (self.body is not None or self.reply is not None)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "status": self.status}
        if self.replica is not None:
            out["replica"] = self.replica
        if self.error is not None:
            out["error"] = self.error
        elif self.body is not None:
            out["usage"] = self.body.get("usage")
        return out


def member_call(wl: Members, call: Call, member: str, stream: bool) -> Call:
    """The ensemble call for one member: same path and headers, the member's name, streamed
    (with usage) or not, charged to nobody (the ensemble call was charged once)."""
    name = wl.models.resolve(member)
    body = {**call.payload, "model": name, "stream": stream}
    if stream:
        options = call.payload.get("stream_options") or {}
        body["stream_options"] = {**options, "include_usage": True}
    else:
        body.pop("stream_options", None)
    return call.derive(
        body=orjson.dumps(body),
        payload=body,
        model=name,
        stream=stream,
        reply_headers={},
        api_key=None,
        on_usage=None,
        cached=False,  # the ensemble's answer is not the member's (a `first` race, a vote)
    )


def error_of(status: int, raw: bytes) -> dict[str, Any]:
    """A failed member's error as the ensemble reports it (the upstream's, else its text)."""
    found = parse_error(raw)
    error = (
        found.model_dump(exclude={"param"})
        if found is not None
        else {"message": raw[:300].decode("utf-8", "replace"), "type": "upstream_error"}
    )
    return {k: error.get(k) for k in ("message", "type", "code")} | {"status": status}


def timed_out(member: str, seconds: float) -> Outcome:
    error = {
        "message": f"member `{member}` did not answer within {seconds:g}s",
        "type": "timeout",
        "code": "ensemble_timeout",
        "status": 504,
    }
    return Outcome(member, 504, error=error)


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


def all_failed(ensemble: EnsembleConfig, outcomes: list[Outcome], headers: dict[str, str]) -> Reply:
    statuses = {o.status for o in outcomes}
    status = statuses.pop() if len(statuses) == 1 else 502
    detail = "; ".join(f"{o.model}: {(o.error or {}).get('message')}" for o in outcomes)
    message = f"every member of ensemble `{ensemble.name}` failed: {detail}"
    body = error_dict(message, "upstream_error", "ensemble_failed")
    body["orchestra"] = {"ensemble": ensemble.name, "members": [o.report() for o in outcomes]}
    return Reply(orjson.dumps(body), status, headers, JSON)
