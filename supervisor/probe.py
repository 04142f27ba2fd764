"""HTTP calls from the supervisor to one engine: health, readiness wait, sleep/wake."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import Enum

import aiohttp

from orchestra.config import EngineConfig
from orchestra.health import HEALTH_PATH, NotAlive, probe, wait_healthy


class Readiness(Enum):
    READY = "ready"
    INTERRUPTED = "interrupted"  # the process exited or a stop was requested
    TIMEOUT = "timeout"


class EngineProbe:
    """Shares the manager's aiohttp session; every call has an explicit timeout."""

    def __init__(self, session: aiohttp.ClientSession, config: EngineConfig) -> None:
        self._session = session
        self._config = config
        self._probe_timeout = aiohttp.ClientTimeout(total=config.health_probe_timeout_s)

    async def healthy(self, url: str, path: str = HEALTH_PATH) -> bool:
        failed = await probe(self._session, url + path, self._config.health_probe_timeout_s)
        return failed is None

    async def wait_ready(
        self,
        url: str,
        interrupt: asyncio.Event,
        timeout_s: float,
        path: str = HEALTH_PATH,
        ours: Callable[[], Awaitable[bool]] | None = None,
    ) -> Readiness:
        """Poll `path` every `health_poll_interval_s` (<= 100 ms) until 200 from the engine we
        started (`ours`: the proof that the listener is its process, `ports.owner`; a 200 from
        anyone else is not READY, polling goes on), `interrupt` (set when the process exits or
        a stop is asked: it ends the wait at once), or the deadline."""
        try:
            await wait_healthy(
                url,
                session=self._session,
                timeout_s=timeout_s,
                interval_s=self._config.health_poll_interval_s,
                probe_timeout_s=self._config.health_probe_timeout_s,
                path=path,
                interrupt=interrupt,
                proof=ours,
            )
        except NotAlive:
            return Readiness.INTERRUPTED
        except TimeoutError:
            return Readiness.TIMEOUT
        return Readiness.READY

    async def sleep(self, url: str, level: int = 1) -> None:
        timeout = aiohttp.ClientTimeout(total=self._config.sleep_timeout_s)
        await self._post(url + f"/sleep?level={level}", timeout)
        if not await self.is_sleeping(url):
            raise RuntimeError("engine answered /sleep but /is_sleeping is false")

    async def wake(self, url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=self._config.wake_timeout_s)
        await self._post(url + "/wake_up", timeout)
        if await self.is_sleeping(url):
            raise RuntimeError("engine answered /wake_up but /is_sleeping is still true")

    async def is_sleeping(self, url: str) -> bool:
        async with self._session.get(url + "/is_sleeping", timeout=self._probe_timeout) as resp:
            if resp.status != 200:
                raise RuntimeError(f"/is_sleeping answered {resp.status}")
            body = await resp.json(content_type=None)
            return bool(body.get("is_sleeping"))

    async def _post(self, url: str, limit: aiohttp.ClientTimeout) -> None:
        async with self._session.post(url, timeout=limit) as resp:
            if resp.status >= 400:
                text = (await resp.text())[:500]
                raise RuntimeError(f"POST {url} answered {resp.status}: {text}")
