"""API keys for `/v1/*` and a separate admin key for `/admin/*` and the web console (`/console`,
where a browser sends it as the password of HTTP Basic auth; any user name).

Keys live in config only as hex sha256 (`gateway.api_keys[].sha256`, `gateway.admin_key_sha256`;
env overrides work too: `ORCHESTRA_GATEWAY__ADMIN_KEY_SHA256=...`). A request's bearer key is
hashed once, looked up in a dict and confirmed with `hmac.compare_digest`. With no keys
configured `/v1/*` stays open (backwards compatible); `/admin/*` without an admin key is open to
loopback clients only. The Authorization header is never logged nor echoed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from orchestra.config import ApiKey, GatewayConfig

from .errors import GatewayError, Unauthorized

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class Forbidden(Unauthorized):
    status = 403
    type = "permission_error"
    code = "forbidden"


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
        admin = config.admin_key_sha256
        self.admin_sha256 = admin.strip().lower() if admin else None

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def api_key(self, authorization: bytes | None) -> ApiKey:
        key = bearer(authorization)
        if key is None:
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        digest = hash_key(key)
        found = self.keys.get(digest)
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


class AuthMiddleware:
    """Checks keys before routing; the identified ApiKey goes to `request.state.api_key`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        is_api = path.startswith("/v1/")
        console = path == "/console" or path.startswith("/console/")
        if is_api or console or path.startswith("/admin"):
            gateway = getattr(scope["app"].state, "gateway", None)
            ring: KeyRing | None = getattr(gateway, "keys", None)
            if ring is not None and (ring.enabled or not is_api):
                authorization = _header(scope, b"authorization")
                try:
                    if is_api:
                        scope.setdefault("state", {})["api_key"] = ring.api_key(authorization)
                    else:
                        client = scope.get("client")
                        ring.check_admin(authorization, client[0] if client else None)
                except GatewayError as exc:
                    if console and exc.status == 401:  # let the browser ask for the key
                        exc.headers["www-authenticate"] = 'Basic realm="Orchestra console"'
                    await exc.response()(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None
