"""The one config model for `configs/vllm_config.yaml`, shared by gateway and supervisor.

It loads the user's original file unchanged (`servers` = hot at start, `rotation_pool` = cold)
and extends it with optional sections. Environment variables override the YAML
(`ORCHESTRA_GATEWAY__PORT=9000`). Every error names the YAML path of the bad value.

This module is the whole config and how it is read; its sections live by owner beside it
(`gateway`, `supervisor`, `servers`, `workloads`, `nodes`), and the package (`orchestra.config`)
exports all of them with this module's names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orchestra.config.gateway import BatchConfig, FallbackConfig, GatewayConfig, RayClusterConfig
from orchestra.config.nodes import SupervisorEndpoint
from orchestra.config.servers import ServerConfig
from orchestra.config.supervisor import (
    EngineConfig,
    PreloadConfig,
    RotationConfig,
    SupervisorConfig,
)
from orchestra.config.tracing import TracingConfig
from orchestra.config.workloads import EnsembleConfig, check_workloads

DEFAULT_CONFIG_PATH = Path("configs/vllm_config.yaml")


class ConfigError(Exception):
    """A config file that cannot be used; the message names the YAML path and the bad value."""


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
    ray: RayClusterConfig | None = None
    tracing: TracingConfig | None = None  # OpenTelemetry traces; absent: off

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
        if self.supervisors and self.ray is not None:
            raise ValueError("ray: and supervisors: exclude each other (Ray finds the supervisors)")
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
