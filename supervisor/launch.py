"""From config to launch specs: one `EngineSpec` per managed engine (model x replica).

Ports are the configured ones, or preferred ones from `engine.first_port` upward, skipping every
port the config names; then two more per engine that publishes KV-cache events (its ZMQ
publisher and replay sockets), after every HTTP port, so turning events on moves no HTTP port.
A preferred port is only a first guess: each launch takes a free port (`ports.PortPicker`,
which substitutes it in the argv). The argument list follows `vllm serve` / the OpenAI
api_server.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestra.config import EngineConfig, OrchestraConfig, ServerConfig
from orchestra.protocol import KvEvents

from .lora import lora_args, lora_enabled
from .ports import PortPicker


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to launch one engine, except its GPUs (chosen at start time)."""

    id: str
    served_name: str  # the `model` clients send (ServerConfig.name), not the weights path
    index: int
    port: int  # the configured port, else the preferred one (each launch picks a free one)
    port_key: str | None  # the YAML path of a configured `port:` (None: picked from the range)
    host: str
    advertise_host: str  # the address gateways use (engine.advertise_host, else `host`)
    api_key: str | None  # vLLM --api-key (engines off loopback); gateways send it as Bearer
    log_path: Path
    tensor_parallel_size: int
    pinned_gpus: tuple[int, ...] | None
    sleep_mode: bool
    startup_timeout_s: float
    health_path: str  # 200 there = READY (vLLM's /health, or the model's own engine's)
    base_argv: tuple[str, ...] = field(repr=False)
    port_at: int = field(repr=False)  # index of the port's value in base_argv
    base_env: tuple[tuple[str, str], ...] = field(repr=False)
    kv_events: KvEvents | None = None  # where it publishes KV-cache events (kv_aware routing)
    kv_ports: tuple[int, ...] = ()  # its KV-event sockets' ports (never given to another engine)

    @property
    def url(self) -> str:
        return self.url_at(self.port)

    def url_at(self, port: int) -> str:
        host = self.advertise_host
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    @property
    def config_hash(self) -> str:
        """What an adopted engine must match: its argv (but the picked port) and environment
        from the config."""
        blob = json.dumps([self.argv(0), sorted(self.base_env)]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def argv(self, port: int | None = None) -> list[str]:
        """The command line, listening on `port` (default: `self.port`)."""
        argv = list(self.base_argv)
        if port is not None:
            argv[self.port_at] = str(port)
        return argv

    def env(self, gpus: list[int] | None) -> dict[str, str]:
        """Process environment; `gpus` None or [] leaves CUDA_VISIBLE_DEVICES as inherited."""
        env = {**os.environ, **dict(self.base_env)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        return env


def build_argv(
    engine: EngineConfig,
    server: ServerConfig,
    port: int,
    api_key: str | None = None,
    kv_ports: tuple[int, int] | None = None,
    traces_url: str | None = None,
) -> list[str]:
    assert server.model is not None
    if server.engine is not None:
        return own_engine_argv(engine, server, port, api_key)
    argv = [*engine.command]
    argv += [engine.model_arg, server.model] if engine.model_arg else [server.model]
    argv += ["--served-model-name", server.name, "--host", engine.host, "--port", str(port)]
    argv += ["--tensor-parallel-size", str(server.tensor_parallel_size)]
    if server.pipeline_parallel_size > 1:
        argv += ["--pipeline-parallel-size", str(server.pipeline_parallel_size)]
    if server.distributed_executor_backend is not None:
        argv += ["--distributed-executor-backend", server.distributed_executor_backend]
    if server.max_model_len is not None:
        argv += ["--max-model-len", str(server.max_model_len)]
    argv += ["--dtype", server.dtype]
    if server.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(server.gpu_memory_utilization)]
    if server.sleep_mode:
        argv.append("--enable-sleep-mode")
    argv += lora_args(server)
    if kv_ports is not None:
        argv += ["--enable-prefix-caching", "--kv-events-config", kv_events_config(*kv_ports)]
    if api_key:
        argv.append(f"--api-key={api_key}")  # one token: a key may start with "-"
    if traces_url:  # `tracing:` on: a span per request, joined to the gateway's traceparent
        argv += ["--otlp-traces-endpoint", traces_url]
    return [*argv, *engine.extra_args, *server.extra_args]


def kv_events_config(publisher_port: int, replay_port: int) -> str:
    """vLLM's --kv-events-config. vLLM's publisher binds only wildcard endpoints (a host
    address would make it connect instead), so the sockets listen on every interface and
    carry token ids unauthenticated: docs/balancing.md says so; `kv_events: false` opts out."""
    return json.dumps(
        {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": f"tcp://*:{publisher_port}",
            "replay_endpoint": f"tcp://*:{replay_port}",
        }
    )


def kv_events_of(
    spec_host: str, kv_ports: tuple[int, int], argv: list[str], env: dict[str, str]
) -> KvEvents:
    """What a gateway needs to follow one engine's events and hash blocks as it does: the
    hash algorithm (vLLM's default unless the args name one) and NONE_HASH's seed
    (PYTHONHASHSEED in the engine's environment when set, else vLLM's fixed default)."""
    algo = "sha256"
    for i, arg in enumerate(argv):
        if arg == "--prefix-caching-hash-algo" and i + 1 < len(argv):
            algo = argv[i + 1]
        elif arg.startswith("--prefix-caching-hash-algo="):
            algo = arg.split("=", 1)[1]
    seed = env.get("PYTHONHASHSEED", os.environ.get("PYTHONHASHSEED"))
    return KvEvents(
        publisher=f"tcp://{spec_host}:{kv_ports[0]}",
        replay=f"tcp://{spec_host}:{kv_ports[1]}",
        hash_algo=algo,
        **({"hash_seed": seed} if seed is not None else {}),
    )


def own_engine_argv(
    engine: EngineConfig, server: ServerConfig, port: int, api_key: str | None
) -> list[str]:
    """A model's own (non-vLLM) engine: the model, its name and address, nothing of vLLM's."""
    own, model = server.engine, server.model
    assert own is not None and model is not None
    argv = [*own.command, *([own.model_arg, model] if own.model_arg else [model])]
    argv += ["--served-model-name", server.name, "--host", engine.host, "--port", str(port)]
    if api_key:
        argv.append(f"--api-key={api_key}")
    return [*argv, *own.extra_args, *server.extra_args]


def build_env(
    engine: EngineConfig, server: ServerConfig, engine_id: str, tracing: bool = False
) -> dict[str, str]:
    base = engine.env if server.engine is None else server.engine.env  # engine.env is vLLM's
    env = {**base, **server.env, "ORCHESTRA_ENGINE_ID": engine_id}
    if tracing and server.engine is None:
        # vLLM exports over gRPC unless told otherwise; the endpoint is OTLP/HTTP's.
        env.setdefault("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
        env.setdefault("OTEL_SERVICE_NAME", f"vllm {server.name}")
    if server.sleep_mode:
        env["VLLM_SERVER_DEV_MODE"] = "1"  # exposes /sleep, /wake_up, /is_sleeping
    if lora_enabled(server):
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"  # /v1/load_lora_adapter, unload
    if server.ray_address:
        env["RAY_ADDRESS"] = server.ray_address  # the head joins this Ray cluster
    return env


def _startup_timeout(engine: EngineConfig, server: ServerConfig) -> float:
    own = server.engine.startup_timeout_s if server.engine else None
    return server.startup_timeout_s or own or engine.startup_timeout_s


def _replica_slots(server: ServerConfig) -> list[tuple[int | None, list[int] | None]]:
    """(port, gpu_ids) per engine of a managed server."""
    return [(port, gpus) for port, gpus, _ in _slots(server, "")]


def _slots(server: ServerConfig, at: str) -> list[tuple[int | None, list[int] | None, str]]:
    """(port, gpu_ids, YAML path of the port) per engine of a managed server at YAML path `at`."""
    if not server.replicas:
        return [(server.port, server.gpu_ids, f"{at}.port")]
    slots = []
    for i, rep in enumerate(server.replicas):
        port, key = rep.port, f"{at}.replicas[{i}].port"
        if port is None and i == 0:
            port, key = server.port, f"{at}.port"
        gpus = rep.gpu_ids if rep.gpu_ids is not None else (server.gpu_ids if i == 0 else None)
        slots.append((port, gpus, key))
    return slots


def _port_keys(config: OrchestraConfig) -> dict[str, list[str | None]]:
    """Per managed server, the YAML path of each engine's configured port (None: none)."""
    out: dict[str, list[str | None]] = {}
    for section in ("servers", "rotation_pool"):
        for i, server in enumerate(getattr(config, section)):
            slots = _slots(server, f"{section}[{i}]")
            out[server.name] = [key if port is not None else None for port, _, key in slots]
    return out


def log_path(log_dir: Path, model: str, index: int) -> Path:
    safe = model.replace("/", "_")
    return log_dir / (f"{safe}.log" if index == 0 else f"{safe}.{index}.log")


def _zmq_host(advertise_host: str) -> str:
    host = "127.0.0.1" if advertise_host in ("0.0.0.0", "::") else advertise_host
    return f"[{host}]" if ":" in host else host


def build_specs(config: OrchestraConfig, api_key: str | None = None) -> dict[str, list[EngineSpec]]:
    """Launch specs per managed model name, hot models first, in config order. `api_key` is
    given to every engine (`--api-key`); the supervisor passes one when engines leave loopback."""
    taken = {p for s in config.all_servers for p, _ in _replica_slots(s) if p is not None}
    next_port = config.engine.first_port

    def assign() -> int:
        nonlocal next_port
        while next_port in taken:
            next_port += 1
        taken.add(next_port)
        return next_port

    managed = [s for s in config.all_servers if s.managed]
    ports = {
        s.name: [port if port is not None else assign() for port, _ in _replica_slots(s)]
        for s in managed
    }
    kv_ports = {
        s.name: [(assign(), assign()) for _ in ports[s.name]]
        for s in managed
        if s.publishes_kv_events
    }
    advertise = config.engine.advertise_host or config.engine.host
    port_keys = _port_keys(config)
    traces = None if config.tracing is None else config.tracing.traces_url
    out: dict[str, list[EngineSpec]] = {}
    for server in managed:
        specs = []
        for index, (_, gpus) in enumerate(_replica_slots(server)):
            port = ports[server.name][index]
            kv = kv_ports[server.name][index] if server.name in kv_ports else None
            engine_id = server.name if index == 0 else f"{server.name}#{index}"
            argv = build_argv(config.engine, server, port, api_key, kv, traces)
            env = build_env(config.engine, server, engine_id, traces is not None)
            specs.append(
                EngineSpec(
                    id=engine_id,
                    served_name=server.name,
                    index=index,
                    port=port,
                    port_key=port_keys[server.name][index],
                    host=config.engine.host,
                    advertise_host=advertise,
                    api_key=api_key,
                    log_path=log_path(config.engine.log_dir, server.name, index),
                    tensor_parallel_size=server.tensor_parallel_size,
                    pinned_gpus=tuple(gpus) if gpus is not None else None,
                    sleep_mode=server.sleep_mode,
                    startup_timeout_s=_startup_timeout(config.engine, server),
                    health_path=server.engine.health_path if server.engine else "/health",
                    base_argv=tuple(argv),
                    port_at=argv.index("--port") + 1,
                    base_env=tuple(env.items()),
                    kv_events=kv_events_of(_zmq_host(advertise), kv, argv, env) if kv else None,
                    kv_ports=kv or (),
                )
            )
        out[server.name] = specs
    return out


def port_picker(first_port: int, specs: dict[str, list[EngineSpec]]) -> PortPicker:
    """The supervisor's one picker: every engine claims its configured or preferred port, and
    the KV-event sockets' ports are never given to an engine's HTTP server."""
    every = [spec for group in specs.values() for spec in group]
    return PortPicker(
        first_port, {s.id: s.port for s in every}, [p for s in every for p in s.kv_ports]
    )
