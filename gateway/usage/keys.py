"""API keys made at run time (`orchestra keys create|list|disable|enable|delete`, through the
admin endpoints): kept in the usage database as their sha256 only (the secret is returned
once, by `create`), and handed to the `KeyRing` beside the config's keys.

Every worker re-reads the table every `usage.keys_refresh_s`, so a key made through one worker
works on all of them within that; the worker that made it knows it at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy.exc import IntegrityError

from orchestra.config import ApiKey, Budget
from orchestra.errors import NOT_FOUND, ErrorKind

from ..core.errors import BadRequest, GatewayError, NotFound
from ..protection.keys import KeyRing, hash_key
from .store import StoredKey, UsageStore

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SECRET_PREFIX = "sk-orch-"


class Conflict(GatewayError, kind=ErrorKind(409, "invalid_request_error", "conflict")):
    pass


class KeyNotFound(NotFound, kind=NOT_FOUND.coded("key_not_found")):
    def __init__(self, name: str) -> None:
        super().__init__(f"no key named `{name}` was made at run time", param="name")


class RuntimeKeys:
    def __init__(
        self, store: UsageStore, ring: KeyRing, config_keys: list[ApiKey], teams: Iterable[str]
    ) -> None:
        self._store = store
        self._ring = ring
        self._config_keys = config_keys
        self._teams = frozenset(teams)

    def ring_keys(self) -> list[ApiKey]:
        """The keys made at run time the ring holds (enabled ones)."""
        return list(self._ring.runtime.values())

    async def load(self) -> list[StoredKey]:
        """Re-read the table and hand its keys to the ring."""
        stored = await asyncio.to_thread(self._store.keys)
        self._ring.set_runtime(
            (ApiKey(name=k.name, sha256=k.sha256, budget=k.budget, team=k.team), k.disabled)
            for k in stored
        )
        return stored

    async def run(self, refresh_s: float) -> None:
        """Re-read the keys every `refresh_s`; while the database is away the last ones stay."""
        failing = False
        while True:
            await asyncio.sleep(refresh_s)
            try:
                await self.load()
            except Exception as exc:
                if not failing:
                    log.warning(
                        "run-time keys: the database read failed (%r); keeping the last", exc
                    )
                failing = True
            else:
                failing = False

    async def create(self, name: str, budget: Budget | None, team: str | None = None) -> str:
        """A new key's secret (shown once: only its hash is kept)."""
        if not _NAME.match(name):
            raise BadRequest("a key's name is 1-100 letters, digits, `.`, `_` or `-`", param="name")
        if team is not None and team not in self._teams:
            raise BadRequest(f"no team `{team}` in gateway.teams", param="team")
        if any(k.name == name for k in self._config_keys):
            raise Conflict(f"`{name}` is a key of the config", param="name")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        key = StoredKey(name, hash_key(secret), int(time.time()), False, budget, team)
        try:
            await asyncio.to_thread(self._store.add_key, key)
        except IntegrityError:
            raise Conflict(f"a key named `{name}` exists", param="name") from None
        await self.load()
        return secret

    async def listing(self) -> list[dict[str, Any]]:
        """Every key, the config's and the run time's, without any secret or hash."""
        out: list[dict[str, Any]] = [
            {
                "name": k.name,
                "source": "config",
                "disabled": False,
                "created": None,
                "budget": _budget(k.budget),
                "team": k.team,
            }
            for k in self._config_keys
        ]
        for k in await self.load():
            out.append(
                {
                    "name": k.name,
                    "source": "runtime",
                    "disabled": k.disabled,
                    "created": k.created,
                    "budget": _budget(k.budget),
                    "team": k.team,
                }
            )
        return out

    async def set_disabled(self, name: str, disabled: bool) -> None:
        if not await asyncio.to_thread(self._store.set_disabled, name, disabled):
            raise KeyNotFound(name)
        await self.load()

    async def delete(self, name: str) -> None:
        if not await asyncio.to_thread(self._store.delete_key, name):
            raise KeyNotFound(name)
        await self.load()


def _budget(budget: Budget | None) -> dict[str, Any] | None:
    return budget.model_dump(exclude_none=True) if budget is not None else None
