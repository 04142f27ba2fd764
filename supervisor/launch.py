"""From config to launch specs: one `EngineSpec` per managed engine (model x replica).

Ports are the configured ones, or assigned from `engine.first_port` upward, skipping every port
the config names. The argument list follows `vllm serve` / the OpenAI api_server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestra.config import EngineConfig, OrchestraConfig, ServerConfig
from orchestra.supervisor.adapters import lora_args, lora_enabled


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to launch one engine, except its GPUs (chosen at start time)."""

    id: str
    served_name: str  # the `model` clients send (ServerConfig.name), not the weights path
    index: int
    port: int
    host: str
    log_path: Path
    tensor_parallel_size: int
    pinned_gpus: tuple[int, ...] | None
    sleep_mode: bool
    startup_timeout_s: float
    base_argv: tuple[str, ...] = field(repr=False)
    base_env: tuple[tuple[str, str], ...] = field(repr=False)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def argv(self) -> list[str]:
        return list(self.base_argv)

    def env(self, gpus: list[int] | None) -> dict[str, str]:
        """Process environment; `gpus` None or [] leaves CUDA_VISIBLE_DEVICES as inherited."""
        env = {**os.environ, **dict(self.base_env)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        return env


def build_argv(engine: EngineConfig, server: ServerConfig, port: int) -> list[str]:
    assert server.model is not None
    argv = [*engine.command]
    argv += [engine.model_arg, server.model] if engine.model_arg else [server.model]
    argv += ["--served-model-name", server.name, "--host", engine.host, "--port", str(port)]
    argv += ["--tensor-parallel-size", str(server.tensor_parallel_size)]
    if server.max_model_len is not None:
        argv += ["--max-model-len", str(server.max_model_len)]
    argv += ["--dtype", server.dtype]
    if server.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(server.gpu_memory_utilization)]
    if server.sleep_mode:
        argv.append("--enable-sleep-mode")
    argv += lora_args(server)
    return [*argv, *engine.extra_args, *server.extra_args]


def build_env(engine: EngineConfig, server: ServerConfig, engine_id: str) -> dict[str, str]:
    env = {**engine.env, **server.env, "ORCHESTRA_ENGINE_ID": engine_id}
    if server.sleep_mode:
        env["VLLM_SERVER_DEV_MODE"] = "1"  # exposes /sleep, /wake_up, /is_sleeping
    if lora_enabled(server):
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"  # /v1/load_lora_adapter, unload
    return env


def _replica_slots(server: ServerConfig) -> list[tuple[int | None, list[int] | None]]:
    """(port, gpu_ids) per engine of a managed server."""
    if not server.replicas:
        return [(server.port, server.gpu_ids)]
    slots = []
    for i, rep in enumerate(server.replicas):
        port = rep.port if rep.port is not None else (server.port if i == 0 else None)
        gpus = rep.gpu_ids if rep.gpu_ids is not None else (server.gpu_ids if i == 0 else None)
        slots.append((port, gpus))
    return slots


def log_path(log_dir: Path, model: str, index: int) -> Path:
    safe = model.replace("/", "_")
    return log_dir / (f"{safe}.log" if index == 0 else f"{safe}.{index}.log")


def build_specs(config: OrchestraConfig) -> dict[str, list[EngineSpec]]:
    """Launch specs per managed model name, hot models first, in config order."""
    taken = {p for s in config.all_servers for p, _ in _replica_slots(s) if p is not None}
    next_port = config.engine.first_port
    out: dict[str, list[EngineSpec]] = {}
    for server in config.all_servers:
        if not server.managed:
            continue
        specs = []
        for index, (port, gpus) in enumerate(_replica_slots(server)):
            if port is None:
                while next_port in taken:
                    next_port += 1
                port = next_port
                taken.add(port)
            engine_id = server.name if index == 0 else f"{server.name}#{index}"
            specs.append(
                EngineSpec(
                    id=engine_id,
                    served_name=server.name,
                    index=index,
                    port=port,
                    host=config.engine.host,
                    log_path=log_path(config.engine.log_dir, server.name, index),
                    tensor_parallel_size=server.tensor_parallel_size,
                    pinned_gpus=tuple(gpus) if gpus is not None else None,
                    sleep_mode=server.sleep_mode,
                    startup_timeout_s=server.startup_timeout_s or config.engine.startup_timeout_s,
                    base_argv=tuple(build_argv(config.engine, server, port)),
                    base_env=tuple(build_env(config.engine, server, engine_id).items()),
                )
            )
        out[server.name] = specs
    return out
