"""Engine processes as process groups: spawn under the watchdog, stop with a deadline, clean up.

Every engine runs as `watchdog.py -- ENGINE ARGV` in a new session (its own process group, the
watchdog as leader), so one `killpg` reaches the engine and any workers it forks. The watchdog
kills the group if the supervisor dies (PR_SET_PDEATHSIG). As a second line, each live group is
recorded in `state_dir/groups/<pgid>` with this supervisor run's token, and a starting supervisor
SIGKILLs recorded groups whose processes still carry a matching token in their environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from supervisor import watchdog

log = logging.getLogger(__name__)

RUN_TOKEN_ENV = "ORCHESTRA_SUPERVISOR_RUN"


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("no permission to signal process group %d", pgid)
        return False
    return True


def group_members(pgid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid:
                out.append(proc)
    return out


class ProcessGroups:
    """Spawns engines, stops their groups, and keeps the on-disk record of live groups."""

    def __init__(self, state_dir: Path, run_token: str) -> None:
        self._dir = state_dir / "groups"
        self._token = run_token
        self._live: set[int] = set()

    @property
    def run_token(self) -> str:
        return self._token

    async def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        grace_s: float,
    ) -> asyncio.subprocess.Process:
        """Start `argv` under the watchdog; the returned pid is also the group id."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-I",
            "-S",
            watchdog.__file__,
            "--parent",
            str(os.getpid()),
            "--grace",
            str(grace_s),
            "--",
            *argv,
        ]
        with log_path.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**env, RUN_TOKEN_ENV: self._token},
                start_new_session=True,
            )
        self._record(proc.pid)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, timeout_s: float) -> int:
        """SIGTERM the group, wait up to `timeout_s`, then SIGKILL it. Returns the exit status."""
        pgid = proc.pid
        if proc.returncode is None:
            signal_group(pgid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                log.warning("group %d ignored SIGTERM for %.1fs: SIGKILL", pgid, timeout_s)
                signal_group(pgid, signal.SIGKILL)
                await proc.wait()
        self.reaped(proc)
        return proc.returncode if proc.returncode is not None else -1

    def reaped(self, proc: asyncio.subprocess.Process) -> None:
        """The leader has exited: kill stragglers (workers) still in its group, drop the record."""
        signal_group(proc.pid, signal.SIGKILL)
        self._forget(proc.pid)

    def kill_all_now(self) -> None:
        """Last resort on supervisor exit: SIGKILL every group this run still owns."""
        for pgid in list(self._live):
            signal_group(pgid, signal.SIGKILL)
            self._forget(pgid)

    def kill_leftovers(self) -> list[int]:
        """SIGKILL groups recorded by an earlier supervisor run that are still alive."""
        killed: list[int] = []
        if not self._dir.is_dir():
            return killed
        for entry in self._dir.iterdir():
            with contextlib.suppress(ValueError, OSError):
                pgid, token = int(entry.name), entry.read_text().strip()
                if token != self._token and self._carries_token(pgid, token):
                    signal_group(pgid, signal.SIGKILL)
                    killed.append(pgid)
                entry.unlink()
        if killed:
            log.warning("killed leftover engine groups from an earlier run: %s", killed)
        return killed

    @staticmethod
    def _carries_token(pgid: int, token: str) -> bool:
        for proc in group_members(pgid):
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(RUN_TOKEN_ENV) == token:
                    return True
        return False

    def _record(self, pgid: int) -> None:
        self._live.add(pgid)
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            (self._dir / str(pgid)).write_text(self._token)
        except OSError as exc:
            log.warning("cannot record engine group %d in %s: %s", pgid, self._dir, exc)

    def _forget(self, pgid: int) -> None:
        self._live.discard(pgid)
        with contextlib.suppress(OSError):
            (self._dir / str(pgid)).unlink()
