"""Who may call what: the route table (`routes.py`) marks each path `api_key`, `admin` or
`open`; `AuthMiddleware` enforces it before routing, with the keys of `protection/keys.KeyRing`. The
console's admin routes accept the admin key as the password of HTTP Basic auth too, which is
how a browser sends it (any user name). With no API keys configured the `api_key` routes stay
open (backwards compatible); `admin` routes without an admin key are open to loopback clients
only.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.errors import GatewayError, Unavailable
from ..protection.keys import KeyRing
from .anthropic import as_anthropic
from .routes import Caller, RouteSpec, RouteTable


class AuthMiddleware:
    """Checks the caller before routing, by the route table's entry for the path; the
    identified ApiKey goes to `request.state.api_key` (the pipeline charges it)."""

    def __init__(self, app: ASGIApp, table: RouteTable) -> None:
        self.app = app
        self._table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        spec = self._table.policy(scope["path"])
        if spec is not None and spec.caller is not Caller.OPEN:
            gateway = getattr(scope["app"].state, "gateway", None)
            ring: KeyRing | None = getattr(gateway, "keys", None)
            if ring is None:  # before the lifespan built the gateway: nothing is served yet
                starting = Unavailable("the gateway is starting", headers={"retry-after": "1"})
                await starting.response()(scope, receive, send)
                return
            try:
                identify(ring, spec, scope, first_headers(scope))
            except GatewayError as exc:
                if spec.browser_prompt and exc.status == 401:  # let the browser ask for the key
                    exc.headers["www-authenticate"] = 'Basic realm="Orchestra console"'
                refusal = exc.response()
                if spec.errors == "anthropic":
                    refusal = as_anthropic(refusal)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
