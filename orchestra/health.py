"""The one wait for a server's `/health`: poll until it answers 200, within explicit bounds.

Everything that starts a server and must wait for it uses this: the supervisor's READY wait on
an engine (async, on its aiohttp session: `wait_healthy`), and `orchestra up`, the Ray actor,
the bench and the tests (synchronous, stdlib only: `wait_healthy_sync`). Every bound is the
caller's: the whole wait (`timeout_s`), the pause between two probes (`interval_s`) and one
probe (`probe_timeout_s`). The wait ends three ways:

- the server answered 200 (and, where given, its body passed `accept`): the call returns;
- the server will never answer (its process exited, a stop was asked): `NotAlive`, as soon as
  the caller's `interrupt` is set (async) or at the next probe once `is_alive()` is false (sync);
- `timeout_s` passed: `TimeoutError`, naming the URL and why the last probe failed.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

import aiohttp

HEALTH_PATH = "/health"


class NotAlive(RuntimeError):
    """The server cannot become healthy any more: its process exited, or a stop was asked."""


def _timed_out(url: str, timeout_s: float, last: str) -> TimeoutError:
    return TimeoutError(f"{url} did not answer 200 within {timeout_s:g}s (last: {last})")


def _not_alive(url: str, last: str) -> NotAlive:
    return NotAlive(f"{url} stopped before it answered 200 (last: {last})")


async def probe(session: aiohttp.ClientSession, url: str, timeout_s: float) -> str | None:
    """One GET of `url`: None when it answers 200, else why not (a status or an error)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return _describe(exc)


async def wait_healthy(
    url: str,
    *,
    session: aiohttp.ClientSession,
    timeout_s: float,
    interval_s: float,
    probe_timeout_s: float,
    path: str = HEALTH_PATH,
    interrupt: asyncio.Event | None = None,
    proof: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Poll `url + path` every `interval_s` until it answers 200 (and `proof()`, when given,
    says the answer came from the server we mean: the supervisor's check that the listener is
    the engine it started). `interrupt`, once set, ends the wait at once with `NotAlive` (it
    wakes the pause between probes; a probe in flight finishes first, within
    `probe_timeout_s`). `TimeoutError` after `timeout_s`."""
    target = url + path
    deadline = time.monotonic() + timeout_s
    last = "no probe yet"
    while True:
        if interrupt is not None and interrupt.is_set():
            raise _not_alive(target, last)
        failed = await probe(session, target, probe_timeout_s)
        if failed is None:
            if proof is None or await proof():
                return
            failed = "answered 200, but not from the server we started"
        last = failed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(target, timeout_s, last)
        pause = min(interval_s, remaining)
        if interrupt is None:
            await asyncio.sleep(pause)
            continue
        try:
            await asyncio.wait_for(interrupt.wait(), pause)
        except TimeoutError:
            pass


def probe_sync(
    url: str, timeout_s: float, accept: Callable[[bytes], bool] | None = None
) -> str | None:
    """One GET of `url`: None when it answers 200 (and `accept` takes its body), else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            if reply.status != 200:
                return f"HTTP {reply.status}"
            if accept is not None and not accept(reply.read()):
                return "HTTP 200, but its body was not accepted"
            return None
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}"
    except OSError as exc:  # URLError, refused, reset, timeout
        return _describe(exc)


def wait_healthy_sync(
    url: str,
    *,
    timeout_s: float,
    interval_s: float,
    probe_timeout_s: float,
    path: str = HEALTH_PATH,
    is_alive: Callable[[], bool] | None = None,
    accept: Callable[[bytes], bool] | None = None,
) -> None:
    """Poll `url + path` every `interval_s` until it answers 200 and `accept` (when given)
    takes the body. `is_alive` (e.g. `lambda: proc.poll() is None`) is asked before each
    probe: false ends the wait with `NotAlive`. `TimeoutError` after `timeout_s`."""
    target = url + path
    deadline = time.monotonic() + timeout_s
    last = "no probe yet"
    while True:
        if is_alive is not None and not is_alive():
            raise _not_alive(target, last)
        failed = probe_sync(target, probe_timeout_s, accept)
        if failed is None:
            return
        last = failed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(target, timeout_s, last)
        time.sleep(min(interval_s, remaining))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
