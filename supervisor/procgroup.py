"""Engine processes as process groups: spawn, stop with a deadline, never leave one behind.

Every engine starts in a new session (its own process group, the engine as leader), so one
`killpg` reaches the engine and any workers it forks. Three lines of defence:
1. a normal stop: SIGTERM to the group, `stop_timeout_s`, SIGKILL to the group;
2. the supervisor dies (even by SIGKILL): with `supervisor.on_supervisor_exit: kill`, the
   reaper (`reaper.py`, one per supervisor) sees its stdin pipe close and stops every registered
   group the same way; with `adopt` (the default) there is no reaper: engines keep serving and
   the next supervisor adopts them (`adoption.py`) or kills them;
3. each live group is also recorded in `state_dir/groups/<pgid>` with its run's token (and in
   `state_dir/engines/<pgid>.json` with what adoption checks); a starting supervisor SIGKILLs
   recorded groups it does not adopt whose processes still carry a matching token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import psutil

from . import reaper

log = logging.getLogger(__name__)

RUN_TOKEN_ENV = "ORCHESTRA_SUPERVISOR_RUN"


class EngineProcess(Protocol):
    """An engine's leader: our child (asyncio's Process) or an adopted one."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


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
    """Spawns engines, stops their groups, keeps the reaper and the on-disk record informed."""

    def __init__(
        self, state_dir: Path, run_token: str, reaper_grace_s: float, *, reaper: bool = True
    ) -> None:
        self._dir = state_dir / "groups"
        self.records_dir = state_dir / "engines"
        self._token = run_token
        self._grace = reaper_grace_s
        self._use_reaper = reaper
        self._live: set[int] = set()
        self._reaper: subprocess.Popen[bytes] | None = None

    @property
    def reaper_pid(self) -> int | None:
        return self._reaper.pid if self._reaper is not None else None

    def start_reaper(self) -> None:
        """(Re)start the reaper and tell it every live group (none in adopt mode)."""
        if not self._use_reaper:
            return
        self._reaper = subprocess.Popen(
            [sys.executable, "-I", "-S", reaper.__file__, "--grace", str(self._grace)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # out of reach of the terminal's Ctrl-C
        )
        for pgid in self._live:
            self._tell(f"+{pgid}")

    def stop_reaper(self, timeout_s: float) -> None:
        """Clean exit: close the pipe (the reaper kills what is still registered, if any)."""
        proc, self._reaper = self._reaper, None
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _tell(self, line: str) -> None:
        if self._reaper is None or self._reaper.stdin is None:
            return
        try:
            self._reaper.stdin.write(line.encode() + b"\n")
            self._reaper.stdin.flush()
        except OSError:  # the reaper died: start a new one, which learns every live group
            log.warning("engine reaper %s is gone; starting a new one", self._reaper.pid)
            self._reaper.wait()
            self.start_reaper()

    async def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        record: dict[str, Any] | None = None,
    ) -> asyncio.subprocess.Process:
        """Start `argv` as a new process group; the returned pid is also the group id."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**env, RUN_TOKEN_ENV: self._token},
                start_new_session=True,
            )
        self._live.add(proc.pid)
        self._tell(f"+{proc.pid}")
        self._record(proc.pid, self._token, record)
        return proc

    def adopt(self, pgid: int, token: str, record: dict[str, Any]) -> None:
        """A live group from an earlier run is ours now (it keeps that run's token)."""
        self._live.add(pgid)
        self._tell(f"+{pgid}")
        self._record(pgid, token, record)

    async def stop(self, proc: EngineProcess, timeout_s: float) -> int:
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

    def reaped(self, proc: EngineProcess) -> None:
        """The leader has exited: kill stragglers (workers) still in its group, forget it."""
        if proc.pid not in self._live:
            return
        signal_group(proc.pid, signal.SIGKILL)
        self._live.discard(proc.pid)
        self._tell(f"-{proc.pid}")
        with contextlib.suppress(OSError):
            (self._dir / str(proc.pid)).unlink()
        with contextlib.suppress(OSError):
            (self.records_dir / f"{proc.pid}.json").unlink()

    def release_all(self) -> None:
        """Leave every live group running (records stay on disk for adoption); stop the reaper
        without it killing them."""
        for pgid in list(self._live):
            self._tell(f"-{pgid}")
        self._live.clear()
        self.stop_reaper(self._grace + 5)

    def kill_all_now(self) -> None:
        """Last resort on supervisor exit: SIGKILL every group this run still owns."""
        for pgid in list(self._live):
            signal_group(pgid, signal.SIGKILL)

    def kill_leftovers(self) -> list[int]:
        """SIGKILL groups recorded by an earlier supervisor run that are still alive (except the
        ones this run adopted)."""
        killed: list[int] = []
        if not self._dir.is_dir():
            return killed
        for entry in self._dir.iterdir():
            with contextlib.suppress(ValueError, OSError):
                pgid, token = int(entry.name), entry.read_text().strip()
                if pgid in self._live:
                    continue
                if token != self._token and self.carries_token(pgid, token):
                    signal_group(pgid, signal.SIGKILL)
                    killed.append(pgid)
                entry.unlink()
                (self.records_dir / f"{pgid}.json").unlink(missing_ok=True)
        if killed:
            log.warning("killed leftover engine groups from an earlier run: %s", killed)
        return killed

    @staticmethod
    def carries_token(pgid: int, token: str) -> bool:
        """Some process of group `pgid` was started by the run with `token` (not a reused pid)."""
        for proc in group_members(pgid):
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(RUN_TOKEN_ENV) == token:
                    return True
        return False

    def _record(self, pgid: int, token: str, record: dict[str, Any] | None = None) -> None:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            (self._dir / str(pgid)).write_text(token)
            if record is not None:
                self.records_dir.mkdir(parents=True, exist_ok=True)
                body = {**record, "pid": pgid, "pgid": pgid, "token": token}
                (self.records_dir / f"{pgid}.json").write_text(json.dumps(body))
        except OSError as exc:
            log.warning("cannot record engine group %d in %s: %s", pgid, self._dir, exc)
