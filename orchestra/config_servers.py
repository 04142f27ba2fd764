"""One model of the config (`servers` = hot at start, `rotation_pool` = cold): managed (a
`model:` path the supervisor launches, with its replicas) or unmanaged (`url:`). Import it from
`orchestra.config`, like every section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from orchestra.config_gateway import AffinityConfig, StrictSection, check_url
from orchestra.workload_config import AdapterConfig

BalancingPolicy = Literal[
    "round_robin", "weighted", "least_outstanding", "load_aware", "prefix_aware", "session"
]


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
