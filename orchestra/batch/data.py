"""Datasets for `orchestra batch run`: rows in (JSONL, CSV, Parquet), requests, rows out.

A row is a dict of columns. JSONL lines that are OpenAI batch lines (`custom_id` + `body`) are
sent as they are; other rows become a request through a prompt template (`{column}` fields)
or their `prompt` / `messages` / `text` column. Sampling parameters come from the command line
and are overridden by columns of the same name. Output rows keep every input column and add
the answer, the finish reason, usage and the error, if any.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLING = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
)
RESULT_COLUMNS = (
    "custom_id",
    "answer",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "status_code",
    "error",
)
ENDPOINTS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}


class DataError(Exception):
    """An input or output file that cannot be used; the message says which and why."""


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".parquet"):
        return suffix[1:]
    raise DataError(f"{path}: unknown format (use .jsonl, .csv or .parquet)")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DataError("Parquet needs pyarrow: pip install 'orchestra[batch]'") from None
    return pyarrow


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    kind = _kind(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if kind == "jsonl":
        with path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: a line must be a JSON object")
                yield row
    elif kind == "csv":
        with path.open(newline="") as f:
            yield from csv.DictReader(f)
    else:
        pa = _pyarrow()
        for batch in pa.parquet.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()


@dataclass
class RequestBuilder:
    model: str
    endpoint: str = "chat"
    template: str | None = None
    system: str | None = None
    id_column: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)

    def custom_id(self, row: dict[str, Any], index: int) -> str:
        if isinstance(row.get("custom_id"), str) and "body" in row:
            return str(row["custom_id"])
        if self.id_column:
            if self.id_column not in row:
                raise DataError(f"row {index}: no column {self.id_column!r} (--id-column)")
            return str(row[self.id_column])
        return f"row-{index}"

    def request(self, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(path, body) for one row."""
        if isinstance(row.get("body"), dict) and "custom_id" in row:
            body = dict(row["body"])
            body.setdefault("model", self.model)
            return str(row.get("url") or ENDPOINTS[self.endpoint]), body
        body: dict[str, Any] = {"model": self.model}  # type: ignore[no-redef]
        body.update({k: v for k, v in self.sampling.items() if v is not None})
        body.update({k: _value(row[k]) for k in SAMPLING if row.get(k) not in (None, "")})
        text = self._text(row)
        if self.endpoint == "chat":
            if self.template is None and isinstance(row.get("messages"), list):
                body["messages"] = row["messages"]
            else:
                messages = [{"role": "system", "content": self.system}] if self.system else []
                body["messages"] = [*messages, {"role": "user", "content": text}]
        elif self.endpoint == "completions":
            body["prompt"] = text
        else:
            body = {"model": self.model, "input": text}
        return ENDPOINTS[self.endpoint], body

    def _text(self, row: dict[str, Any]) -> str:
        if self.template is not None:
            try:
                return self.template.format_map(row)
            except KeyError as exc:
                raise DataError(f"template field {exc} is not a column of the row") from None
        for column in ("prompt", "text", "question", "input"):
            if isinstance(row.get(column), str):
                return str(row[column])
        if isinstance(row.get("messages"), list):
            return ""
        raise DataError(
            "rows need a --template, or a prompt/text/question/input/messages column; "
            f"this one has {sorted(row)}"
        )


def _value(value: Any) -> Any:
    """A CSV cell is text: '0.5' -> 0.5, '["a"]' -> ['a']; other text stays as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def result_row(
    row: dict[str, Any], custom_id: str, status: int, reply: Any, error: str | None
) -> dict[str, Any]:
    answer: Any = None
    finish = None
    usage = reply.get("usage") if isinstance(reply, dict) else None
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if isinstance(choices, list) and choices:
        first = choices[0]
        message = first.get("message") or {}
        answer = message.get("content") if message else first.get("text")
        finish = first.get("finish_reason")
    elif isinstance(reply, dict) and isinstance(reply.get("data"), list) and reply["data"]:
        answer = reply["data"][0].get("embedding")
    usage = usage if isinstance(usage, dict) else {}
    inputs = {k: v for k, v in row.items() if k not in RESULT_COLUMNS}
    return {
        **inputs,
        "custom_id": custom_id,
        "answer": answer,
        "finish_reason": finish,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "status_code": status,
        "error": error,
    }


class ResultWriter:
    """Appends result rows as they arrive: JSONL and CSV straight into OUT; Parquet into a
    journal (`OUT.partial.jsonl`) that `close` turns into the Parquet file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = _kind(path)
        self.journal = path.with_name(path.name + ".partial.jsonl")
        target = self.journal if self.kind == "parquet" else path
        self._csv_fields: list[str] | None = None
        if self.kind == "csv" and path.exists() and path.stat().st_size:
            with path.open(newline="") as f:
                self._csv_fields = next(csv.reader(f), None)
        self._file = target.open("a", newline="")

    def done_ids(self) -> set[str]:
        """custom_ids already answered without error in OUT (for --resume)."""
        done: set[str] = set()
        for source in (self.path, self.journal):
            if source.exists() and source.stat().st_size:
                done |= {str(r["custom_id"]) for r in read_rows(source) if not r.get("error")}
        return done

    def write(self, row: dict[str, Any]) -> None:
        if self.kind == "csv":
            if self._csv_fields is None:
                self._csv_fields = list(row)
                csv.writer(self._file).writerow(self._csv_fields)
            flat = {
                k: v if not isinstance(v, (dict, list)) else json.dumps(v) for k, v in row.items()
            }
            csv.DictWriter(self._file, self._csv_fields, extrasaction="ignore").writerow(flat)
        else:
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Finish OUT: one row per custom_id (a row retried by --resume keeps its last try)."""
        self._file.close()
        if self.kind == "parquet":
            if self.journal.exists():
                rows = list(read_rows(self.path)) if self.path.exists() else []
                self._replace(_last_per_id([*rows, *read_rows(self.journal)]))
                self.journal.unlink()
        elif self.path.exists():
            rows = list(read_rows(self.path))
            latest = _last_per_id(rows)
            if len(latest) != len(rows):
                self._replace(latest)

    def _replace(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        if self.kind == "parquet":
            pa = _pyarrow()
            pa.parquet.write_table(pa.Table.from_pylist(rows), tmp)
        elif self.kind == "csv":
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, list(rows[0]) if rows else [])
                writer.writeheader()
                writer.writerows(rows)
        else:
            with tmp.open("w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        tmp.replace(self.path)


def _last_per_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest.pop(str(row["custom_id"]), None)
        latest[str(row["custom_id"])] = row
    return list(latest.values())
