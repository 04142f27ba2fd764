"""An engine's state machine: its state, and what each command does to it and its process.

`EngineMachine` holds the state (`states.EngineState`) and the transitions (start, stop, sleep,
wake, adopt, a crash, a backoff retry), each spawning, watching or stopping the engine's process
group. Only the engine's owner task runs them, one at a time (`engine.Engine`, which queues the
commands); a process exit and a backoff timer come back to it as commands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestra.config import EngineConfig

from .errors import EngineError
from .launch import EngineSpec
from .logtail import tail_lines
from .ports import Owner, PortPicker, owner
from .probe import EngineProbe, Readiness
from .procgroup import EngineProcess, ProcessGroups
from .states import EngineState, check_transition

log = logging.getLogger(__name__)
S = EngineState
Listener = Callable[[EngineSpec, EngineState, EngineState], None]  # (engine, old, new)


@dataclass
class Command:
    kind: str  # start | stop | sleep | wake | restart | close | adopt | _exited | _retry
    future: asyncio.Future[None] | None = None
    proc: Any = None  # adopt: the EngineProcess
    gpus: list[int] = field(default_factory=list)
    port: int = 0  # adopt: the port the engine listens on
    reset: bool = False
    generation: int = 0


class EngineMachine:
    def __init__(
        self,
        spec: EngineSpec,
        config: EngineConfig,
        groups: ProcessGroups,
        probe: EngineProbe,
        on_change: Listener,
        ports: PortPicker,
    ) -> None:
        self.spec = spec
        self._config = config
        self._groups = groups
        self._probe = probe
        self._on_change = on_change
        self._ports = ports
        self.state = S.COLD
        self.port = spec.port  # where it listens (picked at each launch: `ports.py`)
        self.gpus: list[int] = []
        self.pid: int | None = None
        self.restarts = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_startup_s: float | None = None
        self.ready_since: float | None = None
        self.starting_since: float | None = None  # monotonic time the current start began
        self._pending_starts = 0
        self._proc: EngineProcess | None = None
        self._detached = False  # the supervisor exits leaving this engine for the next one
        self._generation = 0
        self._interrupt = asyncio.Event()
        self._stop_requested = False
        self._retry: asyncio.TimerHandle | None = None
        self._inbox: asyncio.Queue[Command] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def url(self) -> str:
        return self.spec.url_at(self.port)

    async def owner(self, pgid: int) -> Owner:
        """Who listens on this engine's port (psutil reads /proc: off the event loop)."""
        return await asyncio.to_thread(owner, pgid, self.spec.host, self.port)

    @property
    def uptime_s(self) -> float | None:
        return None if self.ready_since is None else time.monotonic() - self.ready_since

    def _set(self, new: EngineState) -> None:
        old = self.state
        check_transition(old, new)
        self.state = new
        log.info("engine %s: %s -> %s", self.id, old.value, new.value)
        self._on_change(self.spec, old, new)

    def record(self) -> dict[str, Any]:
        """What adoption checks (`adoption.py`), written beside the group at spawn."""
        spec = self.spec
        return {"engine": spec.id, "model": spec.served_name, "port": self.port,
                "gpus": list(self.gpus), "config_hash": spec.config_hash}  # fmt: skip

    async def _adopt(self, proc: EngineProcess, gpus: list[int], port: int) -> None:
        if self.state is not S.COLD:
            raise EngineError(f"{self.id}: cannot adopt while {self.state.value}")
        self.gpus = list(gpus)
        self.port = port
        self._ports.adopted(self.id, port)
        self._set(S.STARTING)  # COLD -> STARTING
        self._generation += 1
        generation, interrupt = self._generation, asyncio.Event()
        self._interrupt = interrupt
        self._proc, self.pid = proc, proc.pid
        self._watcher = asyncio.create_task(
            self._watch(proc, generation, interrupt), name=f"watch:{self.id}"
        )
        self.ready_since = time.monotonic()
        self._set(S.READY)  # STARTING -> READY
        if self.spec.sleep_mode and await self._probe.is_sleeping(self.url):
            self._set(S.SLEEPING)  # READY -> SLEEPING

    async def _start(self, gpus: list[int], reset: bool) -> None:
        if self._stop_requested:
            raise EngineError(f"{self.id}: start cancelled by a stop")
        if self.state is S.READY:
            return
        if self.state is S.SLEEPING:
            await self._wake()
            return
        if self.state is S.FAILED and not reset:
            raise EngineError(f"{self.id} is FAILED: {self.last_error}")
        if reset:
            self.failures = 0
        if self.state is S.BACKOFF:
            self._cancel_retry()
        else:
            self.gpus = list(gpus)
        await self._launch()

    async def _launch(self) -> None:
        """COLD/BACKOFF/FAILED -> STARTING -> READY, or -> BACKOFF/FAILED with the log tail."""
        if self.state is S.BACKOFF:
            # A restart after a failure, whether the backoff timer or an ensure started it.
            self.restarts += 1
        self._set(S.STARTING)  # COLD|BACKOFF|FAILED -> STARTING
        self._generation += 1
        generation, interrupt = self._generation, asyncio.Event()
        self._interrupt = interrupt
        log_path = self.spec.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as f:
            since = f.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            f.write(f"--- orchestra: starting {self.id} at {stamp} on gpus {self.gpus}\n".encode())
            since = f.tell()
        began = self.starting_since = time.monotonic()
        try:
            # Right before the launch: a port free now (the config's, or one from the range).
            self.port = self._ports.pick(self.id, self.spec.host, self.spec.port_key)
            proc = await self._groups.spawn(
                self.spec.argv(self.port), self.spec.env(self.gpus), log_path, self.record()
            )
        except (OSError, EngineError) as exc:
            why = str(exc) if isinstance(exc, EngineError) else f"{self.id}: cannot start: {exc}"
            self._fail(why)
            raise EngineError(self.last_error or "") from None
        self._proc, self.pid = proc, proc.pid
        self._watcher = asyncio.create_task(
            self._watch(proc, generation, interrupt), name=f"watch:{self.id}"
        )

        async def ours() -> bool:  # a 200 from a foreign listener on our port is not READY
            return (await self.owner(proc.pid)).ours

        result = await self._probe.wait_ready(
            self.url, interrupt, self.spec.startup_timeout_s, self.spec.health_path, ours
        )
        if result is Readiness.READY and proc.returncode is None:
            self.last_startup_s = time.monotonic() - began
            self.ready_since = time.monotonic()  # last_error stays: why it last restarted
            self._set(S.READY)  # STARTING -> READY
            return
        if self._stop_requested and proc.returncode is None:
            self._set(S.STOPPING)  # STARTING -> STOPPING (a stop interrupted the start)
            await self._kill()
            self._set(S.COLD)  # STOPPING -> COLD
            raise EngineError(f"{self.id}: start interrupted by a stop")
        if result is Readiness.TIMEOUT:
            await self._groups.stop(proc, self._config.stop_timeout_s)
            why = f"not healthy after {self.spec.startup_timeout_s:g}s"
        else:
            await proc.wait()
            why = f"exited with code {proc.returncode} during startup"
        held = await self.owner(proc.pid)
        if held.foreign:  # e.g. it could not bind: say who holds the port
            why += f" ({held.describe(self.port)})"
        self._fail(self._error(why, since))
        raise EngineError(self.last_error or why)

    async def _watch(self, proc: EngineProcess, generation: int, interrupt: asyncio.Event) -> None:
        await proc.wait()
        self._groups.reaped(proc)  # SIGKILL stragglers (workers) left in the group
        interrupt.set()
        self._inbox.put_nowait(Command("_exited", generation=generation))

    async def _crashed(self) -> None:
        if self.state not in (S.READY, S.SLEEPING):
            return  # expected exits (stop, failed start) are handled where they happen
        code = self._proc.returncode if self._proc else None
        self._fail(self._error(f"exited with code {code} while {self.state.value}", 0))

    def _fail(self, error: str) -> None:
        """STARTING|READY|SLEEPING -> BACKOFF (retry later) or -> FAILED (too many failures)."""
        log.warning("engine %s: %s", self.id, error.splitlines()[0])
        self.last_error = error
        held = self.uptime_s or 0.0
        if held >= self._config.stable_after_s:
            self.failures = 0
        self.failures += 1
        self.ready_since = None
        self._proc, self.pid = None, None
        if self.failures > self._config.max_restarts:
            self.gpus = []
            self._set(S.FAILED)  # -> FAILED
            return
        delay = min(
            self._config.backoff_initial_s * 2 ** (self.failures - 1), self._config.backoff_max_s
        )
        self._set(S.BACKOFF)  # -> BACKOFF
        retry = Command("_retry", generation=self._generation)
        self._retry = asyncio.get_running_loop().call_later(delay, self._inbox.put_nowait, retry)

    async def _stop(self) -> None:
        self._cancel_retry()
        if self.state in (S.BACKOFF, S.FAILED):
            self.gpus = []
            self._set(S.COLD)  # BACKOFF|FAILED -> COLD
            return
        if self.state not in (S.READY, S.SLEEPING):
            return
        self._set(S.STOPPING)  # READY|SLEEPING -> STOPPING
        await self._kill()
        self.gpus = []
        self._set(S.COLD)  # STOPPING -> COLD

    async def _kill(self) -> None:
        proc = self._proc
        self._generation += 1  # its exit is expected now: not a crash
        if proc is not None:
            await self._groups.stop(proc, self._config.stop_timeout_s)
        self._proc, self.pid, self.ready_since = None, None, None

    async def _sleep(self) -> None:
        if self.state is S.SLEEPING:
            return
        if self.state is not S.READY:
            raise EngineError(f"{self.id}: cannot sleep while {self.state.value}")
        if not self.spec.sleep_mode:
            raise EngineError(f"{self.id}: sleep_mode is off for this model")
        await self._probe.sleep(self.url)
        self._set(S.SLEEPING)  # READY -> SLEEPING

    async def _wake(self) -> None:
        if self.state is S.READY:
            return
        if self.state is not S.SLEEPING:
            raise EngineError(f"{self.id}: cannot wake while {self.state.value}")
        began = time.monotonic()
        await self._probe.wake(self.url)
        self.last_startup_s = time.monotonic() - began
        self._set(S.READY)  # SLEEPING -> READY

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _error(self, why: str, since: int) -> str:
        lines = tail_lines(self.spec.log_path, self._config.log_tail_lines, since)
        tail = "\n".join(lines) if lines else "(log is empty)"
        return f"{self.id} {why}; last lines of {self.spec.log_path}:\n{tail}"
