"""`orchestra up` / `make up`: the supervisor, then the gateway; Ctrl-C or SIGTERM stops both.

Order on the way up: supervisor, its /health, the hot models READY (progress shown), then the
gateway and its /health; on the way down: the supervisor is told first (its waiting loads answer
503), then the gateway stops (it drains its requests in flight), then the supervisor (which
stops every engine): within about `gateway.drain_timeout_s` + `engine.stop_timeout_s`. Children
get SIGTERM from the kernel if `up` itself is killed (`orchestra.lifetime`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from rich.console import Console

from orchestra import models
from orchestra.config import ConfigError, OrchestraConfig, load_config
from orchestra.control import ControlClient, ControlError, call_sync
from orchestra.health import NotAlive, wait_healthy_sync
from orchestra.lifetime import spawn, stop_group

GPU_CONFIG = Path("configs/vllm_config.yaml")
CPU_CONFIG = Path("configs/cpu.yaml")
HEALTH_TIMEOUT_S = 60.0
HEALTH_PROBE_TIMEOUT_S = 2.0
POLL_S = 0.25
SHUTDOWN_CALL_TIMEOUT_S = 2.0


def has_gpu() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pick_config(given: str | None) -> Path:
    if given:
        return Path(given)
    return GPU_CONFIG if has_gpu() else CPU_CONFIG


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _status_ok(body: bytes) -> bool:
    """Both /health bodies (the supervisor's and the gateway's) say `"status": "ok"` once
    serving; the gateway says `degraded` while a model is not ready."""
    try:
        return bool(json.loads(body or b"null").get("status") == "ok")
    except (ValueError, AttributeError):
        return False


class Child:
    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            # its own session: Ctrl-C reaches `up` only, and `up` stops its children in order
            self.proc = spawn(argv, stdout=log)

    def exited(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout_s: float) -> int:
        """SIGTERM, then SIGKILL to its whole group (the gateway's workers) after `timeout_s`."""
        return stop_group(self.proc, timeout_s)

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _wait_health(console: Console, child: Child, url: str) -> None:
    with console.status(f"waiting for the {child.name} at {url} ..."):
        try:
            wait_healthy_sync(
                url,
                timeout_s=HEALTH_TIMEOUT_S,
                interval_s=POLL_S,
                probe_timeout_s=HEALTH_PROBE_TIMEOUT_S,
                is_alive=lambda: child.exited() is None,
                accept=_status_ok,
            )
        except (NotAlive, TimeoutError) as exc:
            raise RuntimeError(
                f"the {child.name} did not come up ({exc}):\n{child.tail()}"
            ) from None


def _wait_hot(console: Console, config: OrchestraConfig, sup: Child) -> None:
    hot = [s.name for s in config.servers if s.managed]
    if not hot or not config.supervisor.start_hot:
        return
    client = ControlClient.from_config(config, timeout_s=2.0)
    deadline = time.monotonic() + config.supervisor.ensure_timeout_s
    with console.status("starting the hot models ...") as status:
        while time.monotonic() < deadline:
            try:
                table = call_sync(client, lambda c: c.models())
            except ControlError as exc:
                raise RuntimeError(f"cannot read the model table: {exc.message}") from None
            models = {m.name: m for m in table}
            states = {n: models[n].state for n in hot if n in models}
            status.update("hot models: " + ", ".join(f"{n} {s}" for n, s in states.items()))
            settled = [n for n, s in states.items() if s in ("ready", "failed")]
            if len(settled) == len(hot):
                for name in hot:
                    if states.get(name) == "failed":
                        engines = models[name].engines
                        error = (engines[0].last_error if engines else None) or ""
                        console.print(f"[red]{name} failed:[/] {error}", highlight=False)
                    else:
                        console.print(f"[green]{name} ready[/] {models[name].upstreams}")
                return
            if sup.exited() is not None:
                raise RuntimeError(f"the supervisor exited:\n{sup.tail()}")
            time.sleep(POLL_S)
    console.print("[yellow]hot models still starting; continuing[/]")


def _begin_shutdown(config: OrchestraConfig) -> None:
    """Before the gateway drains: the supervisor answers its waiting loads 503 at once, so the
    drain waits only for requests that can finish (engines serve until the supervisor stops)."""
    client = ControlClient.from_config(config, timeout_s=SHUTDOWN_CALL_TIMEOUT_S)
    try:
        call_sync(client, lambda c: c.begin_shutdown())
    except ControlError:
        pass  # not answering: stopping it is all that is left to do


def _prepare_local(console: Console, config: OrchestraConfig) -> None:
    """First run on a fresh clone: the engine venv and the models/ folders the config names.

    Only what this repository can build is touched: an engine command inside .venv-engine and
    model paths `models/<known name>`. Both steps print their own progress and are skipped
    when already done.
    """
    # absolute(), not resolve(): the venv's python is a symlink to the base interpreter.
    engine_cmd = Path(config.engine.command[0]).absolute()
    if engine_cmd.is_relative_to(models.ENGINE_VENV) and not models.engine_installed():
        console.print("[bold]first run:[/] installing the vLLM engine into .venv-engine")
        models.install_engine()
    for server in config.all_servers:
        if not server.model:
            continue
        path = Path(server.model).resolve()
        # resolved both sides: models/ may be a link (the container image's, to /data/models)
        if path.parent == models.MODELS_DIR.resolve() and path.name in models.KNOWN:
            if not models.model_prepared(path):
                console.print(f"[bold]first run:[/] building {path} (no hub access)")
                models.prepare_model(path.name, path)


def _banner(console: Console, config: OrchestraConfig) -> None:
    base = f"http://localhost:{config.gateway.port}/v1"
    model = next((s.name for s in config.all_servers), "MODEL")
    console.print(f"\n[bold]Orchestra is up[/]: OpenAI base_url = [cyan]{base}[/]")
    console.print(
        f"  curl {base}/chat/completions -H 'Content-Type: application/json' -d "
        f"""'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'""",
        highlight=False,
    )
    console.print("  orchestra status | Ctrl-C stops the gateway, then the supervisor\n")


def main(args: argparse.Namespace) -> int:
    console = Console(soft_wrap=True)
    path = pick_config(getattr(args, "config", None))
    try:
        config = load_config(path)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/]", highlight=False)
        return 2
    console.print(f"config: {path}")
    try:
        _prepare_local(console, config)
    except models.PrepareFailed as exc:
        console.print(f"[red]{exc}[/]", highlight=False)
        return 1
    log_dir = config.engine.log_dir
    children: list[Child] = []
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        python = sys.executable
        sup = Child(
            "supervisor",
            [python, "-m", "orchestra.supervisor", "--config", str(path)],
            log_dir / "supervisor.log",
        )
        children.append(sup)
        _wait_health(console, sup, config.supervisor_url)
        _wait_hot(console, config, sup)
        if not getattr(args, "hot_only", False):
            gw = Child(
                "gateway",
                [python, "-m", "orchestra.gateway", "--config", str(path)],
                log_dir / "gateway.log",
            )
            children.append(gw)
            gw_url = f"http://127.0.0.1:{config.gateway.port}"
            _wait_health(console, gw, gw_url)
            _banner(console, config)
        else:
            console.print("hot set started (no gateway); Ctrl-C stops the supervisor")
        console.print(f"logs: {log_dir}/supervisor.log, {log_dir}/gateway.log")
        while all(c.exited() is None for c in children):
            time.sleep(POLL_S)
        dead = next(c for c in children if c.exited() is not None)
        console.print(f"[red]the {dead.name} exited ({dead.exited()}):[/]\n{dead.tail()}")
        code = 1
    except _Stop as why:
        console.print(f"\n{why}: stopping")
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]", highlight=False)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if children and children[0].exited() is None:  # children[0]: the supervisor
            _begin_shutdown(config)
        deadlines = {
            "gateway": config.gateway.drain_timeout_s + 5,
            "supervisor": config.supervisor.shutdown_timeout_s + config.engine.stop_timeout_s + 5,
        }
        for child in reversed(children):  # gateway first, then the supervisor
            with console.status(f"stopping the {child.name} ..."):
                rc = child.stop(deadlines[child.name])
            clean = rc in (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it handled
            console.print(f"{child.name} stopped" + ("" if clean else f" (exit status {rc})"))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
