"""The usage database: the ledger's rows and the keys made at run time, through SQLAlchemy.

SQLAlchemy because the same statements must run on SQLite (the default, one file under
`.orchestra/`) and on PostgreSQL (several gateways): its Core gives both dialects' upsert
(`INSERT ... ON CONFLICT DO UPDATE`) from one table definition, and pools the connections.

Invariants:
- A ledger row is only ever *added to* (`requests = requests + excluded.requests`, ...), in
  one statement per row: writers of several workers or gateways, and a restarted one, never
  overwrite each other's counts.
- The calls here block (a driver's I/O): the gateway runs them in a thread
  (`asyncio.to_thread`), never on the event loop.
- A key's secret is never stored: only its hex sha256, like the config's keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestra.config import Budget, UsageConfig

_META = sa.MetaData()
LEDGER = sa.Table(
    "orchestra_usage",
    _META,
    sa.Column("key", sa.String(200), primary_key=True),  # the key's name ("" = no key)
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("hour", sa.BigInteger, primary_key=True),  # epoch seconds of the UTC hour
    sa.Column("requests", sa.BigInteger, nullable=False, default=0),
    sa.Column("errors", sa.BigInteger, nullable=False, default=0),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("cached_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("cost", sa.Float, nullable=False, default=0.0),
)
KEYS = sa.Table(
    "orchestra_keys",
    _META,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.BigInteger, nullable=False),  # epoch seconds
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("budget", sa.Text, nullable=True),  # Budget as JSON
    sa.Column("team", sa.String(200), nullable=True),
)
_CREATE_TRIES = 3
COUNTS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")


@dataclass(frozen=True, slots=True)
class StoredKey:
    name: str
    sha256: str
    created: int
    disabled: bool
    budget: Budget | None
    team: str | None = None


class UsageStore:
    def __init__(self, config: UsageConfig) -> None:
        url = config.url()
        # The SQLite file's folder, made by `create` (nothing is touched before the lifespan).
        self._folder = (
            Path(url.removeprefix("sqlite:///")).parent if url.startswith("sqlite:///") else None
        )
        if self._folder is not None:
            args: dict[str, Any] = {"timeout": config.db_timeout_s}
        else:
            args = {"connect_timeout": max(1, round(config.db_timeout_s))}
        self.engine = sa.create_engine(url, connect_args=args, pool_pre_ping=True)
        # The dialect's own INSERT (with on_conflict_do_update), imported for the one in use.
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            self._insert: Callable[[sa.Table], Any] = pg_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            self._insert = sqlite_insert
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    def create(self) -> None:
        if self._folder is not None:
            self._folder.mkdir(parents=True, exist_ok=True)
        # Every worker (and gateway) creates what is missing at start: two may race between
        # the check and the CREATE; the loser finds the tables there on its next look.
        for attempt in range(_CREATE_TRIES):
            try:
                _META.create_all(self.engine)
                return
            except sa.exc.DBAPIError:
                if attempt + 1 == _CREATE_TRIES:
                    raise

    def close(self) -> None:
        self.engine.dispose()

    # -- the ledger

    def add(self, rows: Mapping[tuple[str, str, int], Mapping[str, float]]) -> None:
        """Add `rows` ((key, model, hour) -> counts) to the ledger, in one transaction."""
        if not rows:
            return
        insert = self._insert
        with self.engine.begin() as conn:
            for (key, model, hour), counts in rows.items():
                stmt = insert(LEDGER).values(key=key, model=model, hour=hour, **counts)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["key", "model", "hour"],
                        set_={c: LEDGER.c[c] + stmt.excluded[c] for c in COUNTS},
                    )
                )

    def rows(
        self, since: int, key: str | None = None, model: str | None = None
    ) -> list[dict[str, Any]]:
        """The ledger's rows from the hour of `since` on, oldest first."""
        query = sa.select(LEDGER).where(LEDGER.c.hour >= since - since % 3600)
        if key is not None:
            query = query.where(LEDGER.c.key == key)
        if model is not None:
            query = query.where(LEDGER.c.model == model)
        query = query.order_by(LEDGER.c.hour, LEDGER.c.key, LEDGER.c.model)
        with self.engine.connect() as conn:
            # str(): the column names are str subclasses (quoted_name), which orjson refuses
            return [{str(k): v for k, v in r._mapping.items()} for r in conn.execute(query)]

    def spent(self, since: int) -> dict[str, tuple[int, float]]:
        """Per key: (tokens, cost) from the hour of `since` on (a budget window's start)."""
        tokens = sa.func.sum(LEDGER.c.prompt_tokens + LEDGER.c.completion_tokens)
        query = (
            sa.select(LEDGER.c.key, tokens, sa.func.sum(LEDGER.c.cost))
            .where(LEDGER.c.hour >= since)
            .group_by(LEDGER.c.key)
        )
        with self.engine.connect() as conn:
            return {k: (int(t or 0), float(c or 0.0)) for k, t, c in conn.execute(query)}

    # -- keys made at run time

    def add_key(self, key: StoredKey) -> None:
        """Raises sqlalchemy.exc.IntegrityError when the name or the hash is taken."""
        with self.engine.begin() as conn:
            conn.execute(sa.insert(KEYS).values(**_key_row(key)))

    def keys(self) -> list[StoredKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(KEYS).order_by(KEYS.c.name))
            return [_stored_key(r._mapping) for r in rows]

    def set_disabled(self, name: str, disabled: bool) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                sa.update(KEYS).where(KEYS.c.name == name).values(disabled=disabled)
            )
            return bool(done.rowcount)

    def delete_key(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(sa.delete(KEYS).where(KEYS.c.name == name)).rowcount)


def _sqlite_pragmas(dbapi_conn: Any, _record: object) -> None:
    # WAL: readers (the CLI, the admin endpoint) never block the writer, and workers' writers
    # wait on each other (busy timeout = the connect timeout) instead of failing.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _key_row(key: StoredKey) -> dict[str, Any]:
    budget = key.budget.model_dump(exclude_none=True) if key.budget is not None else None
    return {
        "name": key.name,
        "sha256": key.sha256,
        "created": key.created,
        "disabled": key.disabled,
        "budget": json.dumps(budget) if budget else None,
        "team": key.team,
    }


def _stored_key(row: Any) -> StoredKey:
    budget = Budget.model_validate(json.loads(row["budget"])) if row["budget"] else None
    disabled = bool(row["disabled"])
    return StoredKey(row["name"], row["sha256"], row["created"], disabled, budget, row["team"])
