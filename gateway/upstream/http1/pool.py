"""The proxied model calls' upstream client: per-upstream pools of keep-alive HTTP/1.1
connections (`protocol.Connection`), built in the app's lifespan and closed there.

Invariants:
- Per upstream (scheme, host, port) at most `max_per_upstream` connections exist, idle ones
  included: a request takes a slot before it takes or opens a connection and gives it back
  when the connection is released or closed (exactly once: `Connection._settle`). A new
  connection is opened only when no idle one is left, so open = leased ≤ the bound then.
- An idle connection is reused most-recent first, and only while it is younger than
  `keepalive_s` (below the upstream's own keep-alive, so it is not the one closing it) and
  the upstream has not closed it; one timer per upstream closes the idle ones as they age
  past `keepalive_s` (no socket is held open longer).
- Opening a connection is bounded by `connect_s`; any failure there is `ConnectFailed` (the
  replica is not there), distinct from a connection lost later (`UpstreamClosed`, the request
  may be retried elsewhere: that covers a keep-alive socket the upstream closed under us).
- A request is written as one buffer: the per-upstream prefix (Host, User-Agent) is encoded
  once; hop-by-hop headers and any Host/Content-Length of the caller's are not forwarded.
- The pool is the gateway's one client for everything it sends to engines: the model calls
  (`request`: the caller reads and settles the connection) and the side calls (`fetch`:
  probes, gauges, tokenize, Ollama; the whole reply read, the lease settled, one timeout).
- It knows every leased connection (per upstream, from `request` until settled), so an
  upstream declared gone (`drop`: its node left the cluster) fails its requests at once: a
  silent peer sends no FIN or RST, only the read timeouts would end them.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Iterable, Mapping
from typing import NamedTuple, cast
from urllib.parse import quote, urlsplit

from aiohttp import Payload
from aiohttp.abc import AbstractStreamWriter

from .protocol import Connection, UpstreamClosed

# Not forwarded: they describe one hop (RFC 9110 §7.6.1), or the gateway sets them itself.
_DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "host",
        "content-length",
    }
)
# A request target sent as is: printable ASCII, no space, no '#'. Anything else (a path with a
# client's decoded id in it: `/v1/responses/{id}`) is percent-encoded, so no line break or
# space can ever split the request line.
_TARGET_AS_IS = re.compile(r"[!\x22\x24-\x7e]*")
_TARGET_SAFE = "/?=&%:@!$'()*+,;~-._"
HIGH_WATER = 256 * 1024  # unread body bytes per connection before its socket stops being read


class Fetched(NamedTuple):
    """A side call's whole reply (`Pool.fetch`)."""

    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


class ConnectFailed(OSError):
    """No connection could be made to the upstream within `connect_s` (refused, unreachable,
    unresolvable, or too slow)."""


class UpstreamGone(UpstreamClosed):
    """The upstream was declared gone (`Pool.drop`): a request still waiting for its response
    head is retried elsewhere (an `UpstreamClosed`), a stream ends with its error event."""


class _Upstream:
    """One upstream's connections: the slots bounding them and the idle ones (oldest first),
    with one timer, while any are idle, that closes them as they pass `keepalive_s`."""

    __slots__ = (
        "_expiry",
        "closed",
        "host",
        "idle",
        "keepalive_s",
        "leased",
        "port",
        "prefix",
        "slots",
        "ssl",
    )

    def __init__(self, url: str, bound: int, keepalive_s: float) -> None:
        parts = urlsplit(url)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.ssl else 80)
        self.prefix = b" HTTP/1.1\r\nHost: %s\r\nUser-Agent: orchestra-gateway\r\n" % (
            parts.netloc.encode("idna")
        )
        self.keepalive_s = keepalive_s
        self.idle: list[Connection] = []
        self.leased: set[Connection] = set()  # from `Pool.request` until settled (`drop`)
        self.slots = asyncio.Semaphore(bound)
        self.closed = False  # the pool is closed: nothing goes back to `idle`
        self._expiry: asyncio.TimerHandle | None = None

    def take_idle(self) -> Connection | None:
        """The most recently used idle connection still good, if any."""
        idle = self.idle
        oldest = asyncio.get_running_loop().time() - self.keepalive_s
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > oldest:
                return conn
            conn.close()
        return None

    def settle(self, conn: Connection, reusable: bool) -> None:
        """A lease ends (`Connection`'s home callback): the slot back, the connection idle."""
        self.slots.release()
        self.leased.discard(conn)
        if reusable and not self.closed:
            loop = asyncio.get_running_loop()
            conn.idle_since = loop.time()
            self.idle.append(conn)
            if self._expiry is None:
                self._expiry = loop.call_at(conn.idle_since + self.keepalive_s, self._expire)
        elif reusable:
            conn.close()

    def _expire(self) -> None:
        self._expiry = None
        loop = asyncio.get_running_loop()
        oldest = loop.time() - self.keepalive_s
        idle = self.idle
        expired = 0
        while expired < len(idle) and idle[expired].idle_since <= oldest:
            idle[expired].close()
            expired += 1
        del idle[:expired]
        if idle:
            self._expiry = loop.call_at(idle[0].idle_since + self.keepalive_s, self._expire)

    def close(self) -> None:
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class Pool:
    def __init__(
        self,
        max_per_upstream: int,
        keepalive_s: float,
        connect_s: float,
        high_water: int = HIGH_WATER,
    ) -> None:
        self._bound = max_per_upstream
        self._keepalive_s = keepalive_s
        self._connect_s = connect_s
        self._high_water = high_water
        self._upstreams: dict[str, _Upstream] = {}
        self.opened = 0  # connections opened so far (tests, and the pool's reuse rate)

    async def request(
        self,
        url: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | Payload,
    ) -> Connection:
        """Send a request to the upstream at `url` (scheme://host:port) and wait for its
        response head. The caller owns the returned connection: read the body, then `release`
        or `close` it (also when this is cancelled or fails, the connection is closed here)."""
        upstream = self._upstreams.get(url)
        if upstream is None:
            upstream = self._upstreams[url] = _Upstream(url, self._bound, self._keepalive_s)
        head = _head(method, path, upstream.prefix, headers, body)
        await upstream.slots.acquire()
        conn: Connection | None = None
        try:
            conn = upstream.take_idle() or await self._connect(upstream)
            upstream.leased.add(conn)
            if isinstance(body, bytes):
                await conn.send(head + body)
            else:
                waiting = conn.send(head)
                # An upload's payload writes itself: `await writer.write(chunk)` is all it uses.
                await body.write(cast(AbstractStreamWriter, conn))
                await waiting
            return conn
        except BaseException:
            if conn is None:
                upstream.slots.release()
            else:
                conn.close()  # gives the slot back (once leased), and cancels the request
            raise

    async def fetch(
        self,
        url: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float,
    ) -> Fetched:
        """A side call: `request`, its whole reply read, the connection settled (back to the
        pool after a clean keep-alive reply, else closed). `timeout_s` bounds all of it,
        waiting for a slot included. Raises OSError: `ConnectFailed`, `UpstreamClosed`,
        TimeoutError. Not for HEAD (its reply's Content-Length would be waited for)."""
        async with asyncio.timeout(timeout_s):
            conn = await self.request(url, method, path, headers, body)
            try:
                data = await conn.read_all()
            except BaseException:
                conn.close()  # a reply cut short (or the timeout): the socket is not reusable
                raise
            reply = Fetched(conn.status, conn.headers, data)
            conn.release()
            return reply

    async def _connect(self, upstream: _Upstream) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_s):
                _, conn = await loop.create_connection(
                    lambda: Connection(self._high_water, upstream.settle),
                    upstream.host,
                    upstream.port,
                    ssl=upstream.ssl,
                )
        except TimeoutError as exc:
            raise ConnectFailed(f"connect timed out after {self._connect_s:g}s") from exc
        except OSError as exc:
            raise ConnectFailed(f"connect failed: {exc!r}") from exc
        self.opened += 1
        return conn

    def drop(self, urls: Iterable[str], why: str) -> int:
        """The upstreams at `urls` are gone for good (their node left the cluster, so nothing
        they send will come): fail every request in flight to them now with `UpstreamGone`
        (`why`) and close their idle connections. Returns how many requests were failed."""
        failed = 0
        for url in urls:
            upstream = self._upstreams.get(url)
            if upstream is None:
                continue
            for conn in upstream.idle:
                conn.close()
            upstream.idle.clear()
            for conn in list(upstream.leased):  # each settles itself, as its reader ends
                conn.set_exception(UpstreamGone(why))
                failed += 1
        return failed

    def close(self) -> None:
        """Close the idle connections, and every one handed back from now on (the app is
        stopping; the leased ones are closed by their requests as they end)."""
        for upstream in self._upstreams.values():
            upstream.close()


def _head(
    method: str, path: str, prefix: bytes, headers: Mapping[str, str], body: bytes | Payload
) -> bytes:
    target = path if _TARGET_AS_IS.fullmatch(path) else quote(path, safe=_TARGET_SAFE)
    lines = [method.encode("ascii"), b" ", target.encode("ascii"), prefix]
    for name, value in headers.items():
        if name.lower() in _DROPPED:
            continue
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
    size = len(body) if isinstance(body, bytes) else body.size
    if size is None:
        raise ValueError("an upload of unknown size cannot be sent")
    lines.append(b"Content-Length: %d\r\n\r\n" % size)
    return b"".join(lines)
