"""API keys and the admin key: who a request's Authorization header says it is.

Keys live in config only as hex sha256 (`gateway.api_keys[].sha256`, `gateway.admin_key_sha256`;
env overrides work too: `ORCHESTRA_GATEWAY__ADMIN_KEY_SHA256=...`). A request's bearer key is
hashed once, looked up in a dict and confirmed with `hmac.compare_digest`. The Authorization
header is never logged nor echoed. Keys made at run time (`orchestra keys create`, kept hashed
in the usage database by `gateway/usage/keys.py`) are looked up beside the config's; once any key
exists, the API-key routes need one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from orchestra.config import ApiKey, GatewayConfig
from orchestra.errors import ErrorKind

from ..core.errors import Unauthorized

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class Forbidden(Unauthorized, kind=ErrorKind(403, "permission_error", "forbidden")):
    pass


def hash_key(key: str) -> str:
    """The hex sha256 to put in config for `key`."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(value: bytes | None) -> str | None:
    """The key of `Authorization: Bearer <key>`, or None."""
    if not value:
        return None
    scheme, _, key = value.decode("latin-1").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def basic_password(value: bytes | None) -> str | None:
    """The password of `Authorization: Basic <base64 user:password>` (how a browser sends the
    admin key to the console), or None."""
    if not value:
        return None
    scheme, _, encoded = value.decode("latin-1").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    password = decoded.partition(":")[2]
    return password or None


class KeyRing:
    def __init__(self, config: GatewayConfig) -> None:
        self.keys: dict[str, ApiKey] = {k.sha256.strip().lower(): k for k in config.api_keys}
        # sha256 -> a key made at run time; and those disabled (a clearer 401 than unknown).
        # Kept in place by `set_runtime` (gateway/usage/keys.py re-reads the database).
        self.runtime: dict[str, ApiKey] = {}
        self.disabled: dict[str, str] = {}  # sha256 -> name
        admin = config.admin_key_sha256
        self.admin_sha256 = admin.strip().lower() if admin else None

    @property
    def enabled(self) -> bool:
        return bool(self.keys or self.runtime or self.disabled)

    def set_runtime(self, keys: Iterable[tuple[ApiKey, bool]]) -> None:
        """The keys made at run time, each with whether it is disabled (replacing the last)."""
        runtime: dict[str, ApiKey] = {}
        disabled: dict[str, str] = {}
        for key, off in keys:
            digest = key.sha256.strip().lower()
            if off:
                disabled[digest] = key.name
            else:
                runtime[digest] = key
        self.runtime.clear()
        self.runtime.update(runtime)
        self.disabled.clear()
        self.disabled.update(disabled)

    def by_name(self, name: str) -> ApiKey | None:
        """A key (from config or made at run time, and enabled) by its name: a batch's owner."""
        for key in (*self.keys.values(), *self.runtime.values()):
            if key.name == name:
                return key
        return None

    def api_key(self, authorization: bytes | None) -> ApiKey:
        key = bearer(authorization)
        if key is None:
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        digest = hash_key(key)
        found = self.keys.get(digest) or self.runtime.get(digest)
        if found is None and digest in self.disabled:
            raise Unauthorized(f"API key `{self.disabled[digest]}` is disabled")
        if found is None or not hmac.compare_digest(found.sha256.strip().lower(), digest):
            raise Unauthorized("incorrect API key provided")
        return found

    def check_admin(self, authorization: bytes | None, client_host: str | None) -> None:
        if self.admin_sha256 is None:
            if client_host not in _LOOPBACK:
                raise Forbidden("admin routes are loopback-only until an admin key is configured")
            return
        key = bearer(authorization) or basic_password(authorization)
        if key is None or not hmac.compare_digest(hash_key(key), self.admin_sha256):
            raise Unauthorized("admin routes need the admin key", code="invalid_admin_key")
