"""Keeps cold models' weights in the page cache within a RAM budget, and tracks residency."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from orchestra.config import PreloadConfig

from .pagecache import Residency, preload_file, residency, weight_files

log = logging.getLogger(__name__)


class Preloader:
    def __init__(self, config: PreloadConfig, model_paths: dict[str, str]) -> None:
        self._config = config
        self._paths = model_paths
        self.residency: dict[str, Residency] = {name: Residency() for name in model_paths}
        self.preloaded: set[str] = set()
        self._stop = threading.Event()  # threads cannot be cancelled: they check this per chunk

    def close(self) -> None:
        self._stop.set()

    def files(self, name: str) -> list[Path]:
        return weight_files(self._paths[name])

    async def measure(self, names: list[str] | None = None) -> None:
        for name in names if names is not None else list(self._paths):
            self.residency[name] = await asyncio.to_thread(residency, self.files(name))

    def plan(self, cold: list[str]) -> list[str]:
        """The cold models (in priority order) whose weights fit the RAM budget together."""
        budget = int(self._config.ram_budget_gb * (1 << 30))
        chosen, used = [], 0
        for name in cold:
            size = self.residency.get(name, Residency()).bytes_total
            if size and used + size <= budget:
                chosen.append(name)
                used += size
        return chosen

    async def preload(self, cold: list[str]) -> list[str]:
        """Preload the budgeted cold models that are not fully resident; returns those read."""
        await self.measure(cold)
        done = []
        chunk = self._config.read_chunk_mb << 20
        for name in self.plan(cold):
            if self.residency[name].fraction >= 0.999:
                continue
            if self._stop.is_set():
                break
            for path in self.files(name):
                try:
                    await asyncio.to_thread(
                        preload_file, path, self._config.method, chunk, self._stop.is_set
                    )
                except OSError as exc:
                    log.warning("preload of %s (%s) failed: %s", name, path, exc)
            await self.measure([name])
            # Only now: whoever sees it preloaded sees its residency measured after the read.
            self.preloaded.add(name)
            done.append(name)
        return done
