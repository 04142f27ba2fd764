"""The durable store: SQLite for files, batches and per-row results; a directory for file bytes.

Every row result is committed as it arrives (WAL journal), so a gateway killed mid-batch loses
at most the rows that were in flight, which have no result and run again after the restart.
All SQLite work runs on one thread of its own (`_run`), so the event loop never blocks on disk
and the connection is never shared between threads.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .shapes import ACTIVE, error_line, usage_object

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    id TEXT PRIMARY KEY, obj TEXT NOT NULL, purpose TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches(
    id TEXT PRIMARY KEY, obj TEXT NOT NULL, status TEXT NOT NULL, owner TEXT);
CREATE TABLE IF NOT EXISTS rows(
    batch_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT NOT NULL,
    model TEXT NOT NULL, body BLOB NOT NULL,
    outcome TEXT, result BLOB, input_tokens INTEGER DEFAULT 0, output_tokens INTEGER DEFAULT 0,
    PRIMARY KEY(batch_id, line));
"""


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # 1-based line of the input file
    custom_id: str
    model: str
    body: bytes


class Store:
    def __init__(self, directory: Path, db_path: Path | None = None) -> None:
        self.files_dir = directory / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-store")
        self._db = sqlite3.connect(
            db_path or directory / "batch.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(batches)")}
        if "owner" not in columns:  # a store made before batches were charged to their key
            self._db.execute("ALTER TABLE batches ADD COLUMN owner TEXT")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._db.close()

    def _tx(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            for sql, args in statements:
                self._db.execute(sql, args)

    # ---- files -----------------------------------------------------------------------------
    def path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    async def add_file(self, obj: dict[str, Any], source: Path | bytes) -> None:
        """Move `source` (a temporary file in `files_dir`) or write bytes, then record it."""

        def do() -> None:
            target = self.path(obj["id"])
            if isinstance(source, bytes):
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(source)
                os.replace(tmp, target)
            else:
                os.replace(source, target)
            self._db.execute(
                "INSERT OR REPLACE INTO files(id, obj, purpose) VALUES(?, ?, ?)",
                (obj["id"], orjson.dumps(obj), obj["purpose"]),
            )

        await self._run(do)

    async def get_file(self, file_id: str) -> dict[str, Any] | None:
        def do() -> dict[str, Any] | None:
            got = self._db.execute("SELECT obj FROM files WHERE id=?", (file_id,)).fetchone()
            return orjson.loads(got[0]) if got else None

        return await self._run(do)

    async def list_files(
        self, purpose: str | None, limit: int, after: str | None, ascending: bool
    ) -> tuple[list[dict[str, Any]], bool]:
        def do() -> tuple[list[dict[str, Any]], bool]:
            sql, args = "SELECT obj FROM files WHERE 1=1", []
            if purpose:
                sql += " AND purpose=?"
                args.append(purpose)
            cmp, order = (">", "ASC") if ascending else ("<", "DESC")
            if after:
                sql += f" AND rowid {cmp} (SELECT rowid FROM files WHERE id=?)"
                args.append(after)
            sql += f" ORDER BY rowid {order} LIMIT ?"
            got = self._db.execute(sql, (*args, limit + 1)).fetchall()
            return [orjson.loads(r[0]) for r in got[:limit]], len(got) > limit

        return await self._run(do)

    async def delete_file(self, file_id: str) -> bool:
        def do() -> bool:
            gone = self._db.execute("DELETE FROM files WHERE id=?", (file_id,)).rowcount > 0
            self.path(file_id).unlink(missing_ok=True)
            return gone

        return await self._run(do)

    # ---- batches ---------------------------------------------------------------------------
    async def add_batch(self, obj: dict[str, Any], owner: str | None = None) -> None:
        """`owner`: the name of the API key that created the batch (its rows are charged to it)."""
        await self._run(
            lambda: self._db.execute(
                "INSERT INTO batches(id, obj, status, owner) VALUES(?, ?, ?, ?)",
                (obj["id"], orjson.dumps(obj), obj["status"], owner),
            )
        )

    async def owner(self, batch_id: str) -> str | None:
        def do() -> str | None:
            got = self._db.execute("SELECT owner FROM batches WHERE id=?", (batch_id,)).fetchone()
            return None if got is None else got[0]

        return await self._run(do)

    def _load(self, batch_id: str) -> dict[str, Any] | None:
        got = self._db.execute("SELECT obj FROM batches WHERE id=?", (batch_id,)).fetchone()
        if got is None:
            return None
        obj: dict[str, Any] = orjson.loads(got[0])
        total, done, failed, tin, tout = self._db.execute(
            "SELECT count(*), count(CASE outcome WHEN 'ok' THEN 1 END),"
            " count(CASE outcome WHEN 'error' THEN 1 END),"
            " coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)"
            " FROM rows WHERE batch_id=?",
            (batch_id,),
        ).fetchone()
        obj["request_counts"] = {"total": total, "completed": done, "failed": failed}
        obj["usage"] = usage_object(tin, tout) if total else None
        return obj

    async def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        return await self._run(lambda: self._load(batch_id))

    async def list_batches(
        self, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        def do() -> tuple[list[dict[str, Any]], bool]:
            sql, args = "SELECT id FROM batches", []
            if after:
                sql += " WHERE rowid < (SELECT rowid FROM batches WHERE id=?)"
                args.append(after)
            got = self._db.execute(sql + " ORDER BY rowid DESC LIMIT ?", (*args, limit + 1))
            ids = [r[0] for r in got.fetchall()]
            out = [self._load(i) for i in ids[:limit]]
            return [o for o in out if o is not None], len(ids) > limit

        return await self._run(do)

    async def update_batch(
        self, batch_id: str, only_if: tuple[str, ...] = (), **fields: Any
    ) -> dict[str, Any] | None:
        """Merge `fields` into the batch; with `only_if`, only while its status is one of
        those (None when it is not: someone else moved it first)."""

        def do() -> dict[str, Any] | None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                got = self._db.execute("SELECT obj FROM batches WHERE id=?", (batch_id,)).fetchone()
                if got is None:
                    return None
                obj = orjson.loads(got[0])
                if only_if and obj["status"] not in only_if:
                    return None
                obj.update(fields)
                self._db.execute(
                    "UPDATE batches SET obj=?, status=? WHERE id=?",
                    (orjson.dumps(obj), obj["status"], batch_id),
                )
            return self._load(batch_id)

        return await self._run(do)

    async def active_batches(self) -> list[dict[str, Any]]:
        def do() -> list[dict[str, Any]]:
            marks = ",".join("?" * len(ACTIVE))
            got = self._db.execute(
                f"SELECT obj FROM batches WHERE status IN ({marks}) ORDER BY rowid", ACTIVE
            )
            return [orjson.loads(r[0]) for r in got.fetchall()]

        return await self._run(do)

    # ---- rows ------------------------------------------------------------------------------
    async def add_rows(self, batch_id: str, rows: list[Row]) -> None:
        """The validated input (replacing any from a validation cut short by a restart)."""

        def do() -> None:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM rows WHERE batch_id=?", (batch_id,))
                self._db.executemany(
                    "INSERT INTO rows(batch_id, line, custom_id, model, body) VALUES(?,?,?,?,?)",
                    [(batch_id, r.line, r.custom_id, r.model, r.body) for r in rows],
                )

        await self._run(do)

    async def pending_rows(self, batch_id: str) -> list[Row]:
        def do() -> list[Row]:
            got = self._db.execute(
                "SELECT line, custom_id, model, body FROM rows"
                " WHERE batch_id=? AND outcome IS NULL ORDER BY line",
                (batch_id,),
            )
            return [Row(*r) for r in got.fetchall()]

        return await self._run(do)

    async def record(
        self, batch_id: str, line: int, ok: bool, result: dict[str, Any], tokens: tuple[int, int]
    ) -> bool:
        """One row's result, committed now. False if it already had one (never overwritten)."""

        def do() -> bool:
            cur = self._db.execute(
                "UPDATE rows SET outcome=?, result=?, input_tokens=?, output_tokens=?"
                " WHERE batch_id=? AND line=? AND outcome IS NULL",
                ("ok" if ok else "error", orjson.dumps(result), *tokens, batch_id, line),
            )
            return cur.rowcount > 0

        return await self._run(do)

    async def close_pending(self, batch_id: str, code: str, message: str) -> int:
        """Every row still without a result gets an error line (`batch_expired`, ...)."""

        def do() -> int:
            got = self._db.execute(
                "SELECT line, custom_id FROM rows WHERE batch_id=? AND outcome IS NULL",
                (batch_id,),
            ).fetchall()
            self._tx(
                (
                    "UPDATE rows SET outcome='error', result=? WHERE batch_id=? AND line=?",
                    (orjson.dumps(error_line(custom_id, code, message)), batch_id, line),
                )
                for line, custom_id in got
            )
            return len(got)

        return await self._run(do)

    async def results(self, batch_id: str, ok: bool) -> bytes:
        """The output (ok) or error file's content: one JSON line per row, in input order."""

        def do() -> bytes:
            got = self._db.execute(
                "SELECT result FROM rows WHERE batch_id=? AND outcome=? ORDER BY line",
                (batch_id, "ok" if ok else "error"),
            )
            return b"".join(bytes(r[0]) + b"\n" for r in got.fetchall())

        return await self._run(do)
