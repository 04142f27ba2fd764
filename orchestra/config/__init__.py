"""The one config model (`configs/vllm_config.yaml`), shared by the gateway and the supervisor.

`root` is the whole config and how it is read (`OrchestraConfig`, `load_config`,
`parse_config`); its sections live by owner: `gateway` (the gateway's, and what all sections
share), `supervisor` (the supervisor's and the engines'), `servers` (the models), `workloads`
(ensembles, aliases, fallbacks, adapters, uploads) and `nodes` (the supervisors of more than one
machine). Callers import the model and every section from here.
"""

from orchestra.config.audit import AuditConfig
from orchestra.config.cache import CacheConfig
from orchestra.config.gateway import (
    AffinityConfig,
    ApiKey,
    BatchConfig,
    ConsoleConfig,
    FallbackConfig,
    GatewayConfig,
    OllamaFallback,
    RayClusterConfig,
    RetryPolicy,
    Timeouts,
)
from orchestra.config.nodes import SupervisorEndpoint
from orchestra.config.root import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    OrchestraConfig,
    format_loc,
    load_config,
    parse_config,
)
from orchestra.config.servers import (
    BalancingPolicy,
    KvAwareConfig,
    ModelEngine,
    ReplicaConfig,
    ReplicaKvEvents,
    ServerConfig,
)
from orchestra.config.supervisor import (
    EngineConfig,
    PreloadConfig,
    RotationConfig,
    SupervisorConfig,
)
from orchestra.config.tracing import TracingConfig
from orchestra.config.usage import Budget, Price, Team, UsageConfig

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AffinityConfig",
    "ApiKey",
    "AuditConfig",
    "BalancingPolicy",
    "BatchConfig",
    "Budget",
    "CacheConfig",
    "ConfigError",
    "ConsoleConfig",
    "EngineConfig",
    "FallbackConfig",
    "GatewayConfig",
    "KvAwareConfig",
    "ModelEngine",
    "OllamaFallback",
    "OrchestraConfig",
    "PreloadConfig",
    "Price",
    "RayClusterConfig",
    "ReplicaConfig",
    "ReplicaKvEvents",
    "RetryPolicy",
    "RotationConfig",
    "ServerConfig",
    "SupervisorConfig",
    "SupervisorEndpoint",
    "Team",
    "Timeouts",
    "TracingConfig",
    "UsageConfig",
    "format_loc",
    "load_config",
    "parse_config",
]
