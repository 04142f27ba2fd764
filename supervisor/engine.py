"""One engine process and the asyncio task that owns its state machine.

Only `Engine._loop` changes `state`; everyone else calls the public coroutines, which queue a
command and await its reply. A process exit and a backoff timer are commands too, so crashes
and requests are handled one at a time, in order. `stop()` also interrupts a start in progress.
What each command does is `transitions.EngineMachine`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from .errors import EngineError, SupervisorError
from .procgroup import EngineProcess, signal_group
from .states import EngineState
from .transitions import Command, EngineMachine, Listener

log = logging.getLogger(__name__)
S = EngineState
__all__ = ["Engine", "Listener"]


class Engine(EngineMachine):
    # ---- public: queue a command, await the reply ---------------------------------------------
    def run(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"engine:{self.spec.id}")

    async def start(self, gpus: list[int], reset: bool = False) -> None:
        """Make the engine READY on `gpus` (kept from before in BACKOFF; woken if SLEEPING)."""
        await asyncio.shield(self.begin_start(gpus, reset))

    def begin_start(self, gpus: list[int], reset: bool = False) -> asyncio.Future[None]:
        """Queue a start now (its GPUs count as taken from this moment); await the future."""
        self._pending_starts += 1
        future = self._queue(Command("start", gpus=list(gpus), reset=reset))
        future.add_done_callback(self._start_settled)
        return future

    def _start_settled(self, future: asyncio.Future[None]) -> None:
        self._pending_starts -= 1
        if not future.cancelled():
            future.exception()  # retrieved: waiters that gave up must not trigger a warning

    @property
    def start_pending(self) -> bool:
        """A start is queued or running: the manager counts its GPUs as taken."""
        return self._pending_starts > 0

    async def stop(self) -> None:
        self._stop_requested = True
        self._interrupt.set()
        await self._send(Command("stop"))

    async def sleep(self) -> None:
        await self._send(Command("sleep"))

    async def wake(self) -> None:
        await self._send(Command("wake"))

    async def restart(self, gpus: list[int]) -> None:
        """Stop and start again (on the GPUs it holds, else on `gpus`), failures forgotten."""
        self._pending_starts += 1  # its GPUs stay taken between the stop and the start
        try:
            await self._send(Command("restart", gpus=list(gpus)))
        finally:
            self._pending_starts -= 1

    async def close(self) -> None:
        """Stop the process and end the task (supervisor shutdown)."""
        if self._task is None or self._task.done():
            return
        self._stop_requested = True
        self._interrupt.set()
        await self._send(Command("close"))
        await self._task

    async def adopt(self, proc: EngineProcess, gpus: list[int], port: int) -> None:
        """A live engine an earlier supervisor started (`adoption.py`): READY on `gpus`,
        listening on `port`."""
        await self._send(Command("adopt", gpus=list(gpus), proc=proc, port=port))

    async def detach(self) -> None:
        """End the task but leave the process serving (a restart that keeps engines)."""
        self._detached = True
        for task in (self._task, self._watcher):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._task, self._watcher) if t is not None), return_exceptions=True
        )

    async def _send(self, command: Command) -> None:
        await asyncio.shield(self._queue(command))

    def _queue(self, command: Command) -> asyncio.Future[None]:
        command.future = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(command)
        return command.future

    # ---- the owner task -----------------------------------------------------------------------
    async def _loop(self) -> None:
        try:
            while True:
                cmd = await self._inbox.get()
                try:
                    await self._handle(cmd)
                except SupervisorError as exc:
                    _reply(cmd, exc)
                except Exception as exc:
                    log.exception("engine %s: %s failed", self.id, cmd.kind)
                    _reply(cmd, EngineError(f"{self.id}: {cmd.kind} failed: {exc}"))
                else:
                    _reply(cmd, None)
                if cmd.kind == "close":
                    return
        finally:
            if self._proc is not None and self._proc.returncode is None and not self._detached:
                signal_group(self._proc.pid, signal.SIGKILL)  # cancelled: leave no group behind

    async def _handle(self, cmd: Command) -> None:
        if cmd.kind in ("stop", "close"):
            self._stop_requested = False
            await self._stop()
        elif cmd.kind == "start":
            await self._start(cmd.gpus, cmd.reset)
        elif cmd.kind == "sleep":
            await self._sleep()
        elif cmd.kind == "wake":
            await self._wake()
        elif cmd.kind == "restart":
            gpus = list(self.gpus or cmd.gpus)
            await self._stop()
            self.restarts += 1
            await self._start(gpus, reset=True)
        elif cmd.kind == "adopt":
            await self._adopt(cmd.proc, cmd.gpus, cmd.port)
        elif cmd.kind == "_exited" and cmd.generation == self._generation:
            await self._crashed()
        elif cmd.kind == "_retry" and cmd.generation == self._generation:
            if self.state is not S.BACKOFF:
                return
            self._retry = None
            with contextlib.suppress(EngineError):  # _launch already recorded the failure
                await self._launch()


def _reply(cmd: Command, exc: BaseException | None) -> None:
    if cmd.future is None or cmd.future.done():
        return
    if exc is None:
        cmd.future.set_result(None)
    else:
        cmd.future.set_exception(exc)
