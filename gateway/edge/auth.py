"""Who may call what: the route table (`routes.py`) marks each path `api_key`, `admin` or
`open`; the edge (`edge.py`) enforces it before routing, with `protection/keys.KeyRing`. The
console's admin routes accept the admin key as the password of HTTP Basic auth too, which is
how a browser sends it (any user name). With no API keys configured the `api_key` routes stay
open (backwards compatible); `admin` routes without an admin key are open to loopback clients
only.
"""

from __future__ import annotations

from starlette.types import Scope

from ..protection.keys import KeyRing
from .routes import Caller, RouteSpec


def first_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by (lowercase, ASGI) name, the first value of each: built from
    the reversed list, so a repeated header's first value is the one that stays."""
    return dict(reversed(scope["headers"]))


def identify(ring: KeyRing, spec: RouteSpec, scope: Scope, headers: dict[bytes, bytes]) -> None:
    """Raise unless the caller may call `spec`; an API key found goes to the scope's state.
    Anthropic's clients send their key as `x-api-key`: it counts as a bearer key. `headers`:
    `first_headers(scope)`."""
    authorization = headers.get(b"authorization")
    if authorization is None:
        api_key = headers.get(b"x-api-key")
        authorization = b"Bearer " + api_key if api_key else None
    if spec.caller is Caller.API_KEY:
        if ring.enabled:
            scope.setdefault("state", {})["api_key"] = ring.api_key(authorization)
        return
    client = scope.get("client")
    ring.check_admin(authorization, client[0] if client else None)
