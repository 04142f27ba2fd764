"""The one config model for `configs/vllm_config.yaml`, shared by gateway and supervisor.

It loads the user's original file unchanged (`servers` = hot at start, `rotation_pool` = cold)
and extends it with optional sections. Environment variables override the YAML
(`ORCHESTRA_GATEWAY__PORT=9000`). Every error names the YAML path of the bad value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orchestra.config_gateway import (
    AffinityConfig,
    ApiKey,
    BatchConfig,
    ConsoleConfig,
    FallbackConfig,
    GatewayConfig,
    OllamaFallback,
    RetryPolicy,
    StrictSection,
    Timeouts,
    check_url,
)
from orchestra.nodes_config import OnSupervisorExit, SupervisorEndpoint
from orchestra.workload_config import AdapterConfig, EnsembleConfig, check_workloads

BalancingPolicy = Literal[
    "round_robin", "weighted", "least_outstanding", "load_aware", "prefix_aware", "session"
]

DEFAULT_CONFIG_PATH = Path("configs/vllm_config.yaml")
__all__ = [  # the gateway's sections live in config_gateway; they are imported from here
    "AffinityConfig",
    "ApiKey",
    "BatchConfig",
    "ConsoleConfig",
    "FallbackConfig",
    "GatewayConfig",
    "OllamaFallback",
    "OrchestraConfig",
    "RetryPolicy",
    "ServerConfig",
    "Timeouts",
]


class ConfigError(Exception):
    """A config file that cannot be used; the message names the YAML path and the bad value."""


class SupervisorConfig(StrictSection):
    host: str = "127.0.0.1"
    port: int = Field(8100, ge=1, le=65535)
    admin_token: str | None = None
    gpus: list[int] | None = Field(
        None, description="GPU ids to manage when NVML/nvidia-smi is absent; [] = CPU only"
    )
    max_resident: int | None = Field(
        None, ge=1, description="most engines resident at once (a CPU host's memory bound)"
    )
    state_dir: Path = Path("run")
    start_hot: bool = Field(True, description="start the `servers` (hot set) when it starts")
    max_sleeping: int | None = Field(
        None, ge=0, description="most sleeping engines kept (their weights sit in host RAM)"
    )
    ensure_timeout_s: float = Field(900.0, gt=0, description="ensure's wait when none is given")
    capacity_wait_s: float = Field(
        120.0, ge=0, description="how long a swap waits for busy victims to become evictable"
    )
    drain_timeout_s: float = Field(
        60.0,
        ge=0,
        description="longest wait for the gateways' in-flight requests on an evicted model",
    )
    gateway_ttl_s: float = Field(
        10.0,
        gt=0,
        description="a gateway that has not synced for this long no longer holds up a drain",
    )
    gpu_detect_timeout_s: float = Field(5.0, gt=0, description="nvidia-smi query timeout")
    shutdown_timeout_s: float = Field(
        10.0, gt=0, description="wait for open control requests before stopping the engines"
    )
    on_supervisor_exit: OnSupervisorExit = Field(
        "adopt",
        description="adopt: engines outlive a crashed supervisor, the next one adopts them; "
        "kill: the reaper kills them (SIGTERM/Ctrl-C stops them either way)",
    )

    @model_validator(mode="after")
    def _token_off_loopback(self) -> SupervisorConfig:
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.admin_token:
            raise ValueError(f"admin_token is required when the control API binds {self.host!r}")
        return self


class EngineConfig(StrictSection):
    command: list[str] = Field(
        default_factory=lambda: ["vllm", "serve"],
        description="engine command prefix; `vllm serve` or `python -m vllm...api_server`",
    )
    model_arg: str = Field(
        "", description='flag before the model path ("--model"); "" = positional (`vllm serve`)'
    )
    extra_args: list[str] = []
    env: dict[str, str] = {}
    startup_timeout_s: float = Field(900.0, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)
    health_poll_interval_s: float = Field(0.1, gt=0, le=0.1)
    max_restarts: int = Field(5, ge=0, description="consecutive failures before FAILED")
    backoff_initial_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    stable_after_s: float = Field(
        60.0, ge=0, description="READY this long resets the failure count"
    )
    log_dir: Path = Path("logs")
    first_port: int = Field(8001, ge=1, le=65535)
    host: str = Field("127.0.0.1", description="engines bind here (`--host`)")
    advertise_host: str | None = Field(
        None, description="address gateways use for the engines; None = `host`"
    )
    api_key: str | None = Field(
        None,
        description="vLLM --api-key for engines off loopback; None = generated once, kept in "
        "supervisor.state_dir",
    )
    health_probe_timeout_s: float = Field(1.0, gt=0, description="one /health probe")
    sleep_timeout_s: float = Field(120.0, gt=0, description="POST /sleep?level=1 bound")
    wake_timeout_s: float = Field(120.0, gt=0, description="POST /wake_up bound")
    log_tail_lines: int = Field(20, ge=0, description="log lines quoted in a failed start")


class RotationConfig(StrictSection):
    enabled: bool = True
    threshold: int = Field(10, ge=1, description="requests in the window a cold model must exceed")
    window_s: float = Field(300.0, gt=0)
    interval_s: float = Field(30.0, gt=0)
    min_residency_s: float = Field(120.0, ge=0, description="hysteresis: no swap-out before this")


class PreloadConfig(StrictSection):
    enabled: bool = True
    ram_budget_gb: float = Field(32.0, ge=0)
    method: Literal["mmap", "read"] = "read"
    interval_s: float = Field(60.0, gt=0, description="how often residency is re-measured")
    read_chunk_mb: int = Field(16, ge=1, description="read size of the `read` method")


class ReplicaConfig(StrictSection):
    url: str | None = Field(None, description="an upstream Orchestra does not launch")
    weight: float = Field(1.0, gt=0)
    gpu_ids: list[int] | None = None
    port: int | None = Field(None, ge=1, le=65535)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return check_url(value)


class ServerConfig(StrictSection):
    """One model. Managed (`model:` path, launched by the supervisor) or unmanaged (`url:`)."""

    name: str = Field(min_length=1)
    model: str | None = None
    url: str | None = None
    replicas: list[ReplicaConfig] | None = None
    balancing: BalancingPolicy = "round_robin"
    affinity: AffinityConfig = AffinityConfig()
    weight: float = Field(1.0, gt=0)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_ids: list[int] | None = None
    max_model_len: int | None = Field(None, ge=1)
    dtype: str = "auto"
    port: int | None = Field(None, ge=1, le=65535)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    extra_args: list[str] = []
    env: dict[str, str] = {}
    sleep_mode: bool = False
    preload: bool = True
    startup_timeout_s: float | None = Field(None, gt=0)
    pipeline_parallel_size: int = Field(1, ge=1, description="vLLM --pipeline-parallel-size")
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        None, description="vLLM --distributed-executor-backend (ray spans nodes)"
    )
    ray_address: str | None = Field(None, description="RAY_ADDRESS for the engine (ray head)")
    max_inflight: int | None = Field(
        None, gt=0, description="admission: requests in flight to this model; None = unlimited"
    )
    max_queue: int = Field(0, ge=0, description="admission: requests waiting beyond max_inflight")
    adapters: list[AdapterConfig] = Field([], description="LoRA adapters on this model's engine")
    max_loras: int | None = Field(None, ge=1, description="--max-loras (adapters in one batch)")
    max_lora_rank: int | None = Field(None, ge=1, description="--max-lora-rank")
    loading_comments: bool | None = Field(
        None, description="SSE comments while a streamed request waits; None = gateway's"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return check_url(value)

    @model_validator(mode="after")
    def _managed_or_not(self) -> ServerConfig:
        if self.url and self.replicas:
            raise ValueError("give either url or replicas, not both")
        if not self.model and not self.url and not self.replicas:
            raise ValueError("a server needs `model` (launched by Orchestra) or `url`/`replicas`")
        if self.replicas:
            with_url = [r.url is not None for r in self.replicas]
            if any(with_url) and not all(with_url):
                raise ValueError("replicas must all have `url` or none of them")
            if not all(with_url) and not self.model:
                raise ValueError("replicas without `url` need the server's `model` to launch")
        if self.gpu_ids is not None and len(self.gpu_ids) != self.tensor_parallel_size:
            raise ValueError(
                f"gpu_ids {self.gpu_ids} must list tensor_parallel_size "
                f"({self.tensor_parallel_size}) GPUs"
            )
        return self

    @property
    def managed(self) -> bool:
        """True when the supervisor launches this model's engines."""
        return self.url is None and not (self.replicas and self.replicas[0].url)


class _YamlSource(PydanticBaseSettingsSource):
    """Feeds the parsed YAML to pydantic-settings, below the environment in priority."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = dict(data)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


class OrchestraConfig(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid", env_prefix="ORCHESTRA_", env_nested_delimiter="__"
    )

    servers: list[ServerConfig] = []
    rotation_pool: list[ServerConfig] = []
    gateway: GatewayConfig = GatewayConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    engine: EngineConfig = EngineConfig()
    rotation: RotationConfig = RotationConfig()
    preload: PreloadConfig = PreloadConfig()
    fallback: FallbackConfig = FallbackConfig()
    ensembles: list[EnsembleConfig] = []
    aliases: dict[str, str] = Field({}, description="client model name -> served name")
    fallbacks: dict[str, list[str]] = Field({}, description="model -> models that serve instead")
    batch: BatchConfig = BatchConfig()
    supervisors: list[SupervisorEndpoint] = []

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry the YAML: environment first so it overrides the file.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique_names_and_ports(self) -> OrchestraConfig:
        seen: dict[str, str] = {}
        ports: dict[int, str] = {}
        for section, index, server in self.iter_servers_with_path():
            where = f"{section}[{index}]"
            if server.name in seen:
                raise ValueError(
                    f"{where}.name: {server.name!r} is already used at {seen[server.name]}"
                )
            seen[server.name] = where
            for port in [server.port, *(r.port for r in server.replicas or [])]:
                if port is None:
                    continue
                if port in ports:
                    raise ValueError(f"{where}.port: {port} is already used by {ports[port]}")
                ports[port] = where
        adapters = [
            (adapter.name, f"{section}[{index}].adapters[{a}].name")
            for section, index, server in self.iter_servers_with_path()
            for a, adapter in enumerate(server.adapters)
        ]
        check_workloads(seen, adapters, self.aliases, self.fallbacks, self.ensembles)
        return self

    @model_validator(mode="after")
    def _unique_supervisor_names(self) -> OrchestraConfig:
        seen: set[str] = set()
        for index, endpoint in enumerate(self.supervisors):
            if endpoint.name in seen:
                raise ValueError(f"supervisors[{index}].name: {endpoint.name!r} is already used")
            seen.add(endpoint.name)
        return self

    def iter_servers_with_path(self) -> Iterator[tuple[str, int, ServerConfig]]:
        for section in ("servers", "rotation_pool"):
            for index, server in enumerate(getattr(self, section)):
                yield section, index, server

    @property
    def all_servers(self) -> list[ServerConfig]:
        """Every model: hot (`servers`) first, then cold (`rotation_pool`)."""
        return [*self.servers, *self.rotation_pool]

    def server(self, name: str) -> ServerConfig | None:
        return next((s for s in self.all_servers if s.name == name), None)

    def is_hot_at_start(self, name: str) -> bool:
        return any(s.name == name for s in self.servers)

    @property
    def supervisor_url(self) -> str:
        if self.gateway.supervisor_url:
            return self.gateway.supervisor_url.rstrip("/")
        host = "127.0.0.1" if self.supervisor.host in ("0.0.0.0", "::") else self.supervisor.host
        return f"http://{host}:{self.supervisor.port}"

    @property
    def supervisor_endpoints(self) -> list[SupervisorEndpoint]:
        """The nodes the gateway talks to; by default the one local supervisor."""
        if self.supervisors:
            return list(self.supervisors)
        token = self.supervisor.admin_token
        return [SupervisorEndpoint(name="local", url=self.supervisor_url, admin_token=token)]


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('servers', 0, 'tensor_parallel_size') -> 'servers[0].tensor_parallel_size'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "model-")) or "[" in part:
            continue  # pydantic validator frames, not YAML keys
        else:
            out += f".{part}" if out else part
    return out


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        path = format_loc(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if not path:
            lines.append(f"  {message}")  # cross-field checks name their own path
        elif item["type"] == "missing":
            lines.append(f"  {path}: {message}")
        else:
            lines.append(f"  {path}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: Mapping[str, Any] | None, source: str = "<dict>") -> OrchestraConfig:
    """Validate already-parsed YAML (plus ORCHESTRA_* env overrides)."""
    data = dict(data or {})
    try:
        return OrchestraConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(path: str | os.PathLike[str] = DEFAULT_CONFIG_PATH) -> OrchestraConfig:
    """Read and validate a YAML config file; raises ConfigError naming the bad YAML path."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"config {path}: the top level must be a mapping, got {type(data).__name__}"
        )
    return parse_config(data, str(path))
