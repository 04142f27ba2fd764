"""Checking a batch input file before anything runs: every bad line is reported, none runs.

Errors follow OpenAI's `errors.data[{code, message, param, line}]` (line is 1-based). A file with
any error fails the whole batch, as OpenAI's does; a good one becomes its rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .store import Row

MAX_ERRORS = 100  # reported per batch; the rest are summed up in one last entry
_REQUIRED = ("custom_id", "method", "url", "body")


@dataclass
class Validated:
    rows: list[Row] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0

    def fail(self, line: int, code: str, message: str, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})

    def error_object(self) -> dict[str, Any]:
        data = list(self.errors)
        if self.error_count > len(data):
            more = self.error_count - len(data)
            data.append(
                {
                    "code": "too_many_errors",
                    "message": f"{more} more errors",
                    "param": None,
                    "line": None,
                }
            )
        return {"object": "list", "data": data}


def validate(
    content: bytes, endpoint: str, known_model: Callable[[str], bool], max_rows: int
) -> Validated:
    out = Validated()
    seen: dict[str, int] = {}
    lines = content.splitlines()
    count = sum(1 for raw in lines if raw.strip())
    if count == 0:
        out.fail(1, "empty_file", "The input file has no requests.")
        return out
    if count > max_rows:
        out.fail(
            1, "too_many_requests", f"The input file has {count} requests; the limit is {max_rows}."
        )
        return out
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        row = _check_line(out, number, raw, endpoint, known_model)
        if row is None:
            continue
        if row.custom_id in seen:
            out.fail(
                number,
                "duplicate_custom_id",
                f"The custom_id '{row.custom_id}' is already used on line {seen[row.custom_id]}.",
                "custom_id",
            )
            continue
        seen[row.custom_id] = number
        out.rows.append(row)
    if out.error_count:
        out.rows.clear()
    return out


def _check_line(
    out: Validated, number: int, raw: bytes, endpoint: str, known_model: Callable[[str], bool]
) -> Row | None:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        out.fail(number, "invalid_json_line", "This line is not parseable as valid JSON.")
        return None
    if not isinstance(item, dict):
        out.fail(number, "invalid_json_line", "This line is not a JSON object.")
        return None
    for name in _REQUIRED:
        if name not in item:
            out.fail(
                number,
                "missing_required_parameter",
                f"Missing required parameter: '{name}'.",
                name,
            )
            return None
    custom_id, body = item["custom_id"], item["body"]
    if not isinstance(custom_id, str) or not custom_id:
        out.fail(number, "invalid_value", "custom_id must be a non-empty string.", "custom_id")
        return None
    if item["method"] != "POST":
        out.fail(number, "invalid_method", "Only the POST method is supported.", "method")
        return None
    if item["url"] != endpoint:
        out.fail(
            number,
            "mismatched_url",
            f"The url '{item['url']}' does not match the batch's endpoint '{endpoint}'.",
            "url",
        )
        return None
    if not isinstance(body, dict):
        out.fail(number, "invalid_value", "body must be a JSON object.", "body")
        return None
    if body.get("stream") is True:
        out.fail(number, "invalid_value", "Streaming is not supported in a batch.", "body.stream")
        return None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        out.fail(
            number,
            "missing_required_parameter",
            "Missing required parameter: 'body.model'.",
            "body.model",
        )
        return None
    if not known_model(model):
        out.fail(number, "model_not_found", f"The model `{model}` does not exist.", "body.model")
        return None
    return Row(number, custom_id, model, orjson.dumps(body))
