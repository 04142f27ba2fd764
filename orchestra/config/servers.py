"""One model of the config (`servers` = hot at start, `rotation_pool` = cold): managed (a
`model:` path the supervisor launches, with its replicas) or unmanaged (`url:`). Import it from
`orchestra.config`, like every section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from orchestra.config.gateway import AffinityConfig, StrictSection, check_url
from orchestra.config.workloads import AdapterConfig

BalancingPolicy = Literal[
    "round_robin",
    "weighted",
    "least_outstanding",
    "load_aware",
    "prefix_aware",
    "session",
    "kv_aware",
]


class KvAwareConfig(StrictSection):
    """Knobs of `balancing: kv_aware` (docs/balancing.md): route on the engines' KV events."""

    tokenize_timeout_s: float = Field(
        0.5, gt=0, description="the engine's /tokenize; slower = prefix_aware for that request"
    )
    load_gate: float = Field(
        8.0,
        ge=0,
        description="leave the engine with the longest cached prefix when its load exceeds "
        "the least-loaded engine's by more than this",
    )
    max_blocks_per_engine: int = Field(
        262144, ge=1, description="block hashes kept per engine (LRU), over the engine's own"
    )
    replay_timeout_s: float = Field(
        5.0, gt=0, description="rebuilding the index from an engine's replay socket"
    )


class ReplicaKvEvents(StrictSection):
    """`replicas[].kv_events`: where an engine Orchestra does not launch publishes its KV-cache
    events (its `--kv-events-config` endpoints, as this gateway reaches them)."""

    publisher: str = Field(pattern=r"^(tcp|ipc)://", description="ZMQ PUB, e.g. tcp://h:5557")
    replay: str | None = Field(None, pattern=r"^(tcp|ipc)://", description="ZMQ ROUTER")
    hash_seed: str = Field("vllm-none-hash", description="the engine's PYTHONHASHSEED, if set")


class ReplicaConfig(StrictSection):
    url: str | None = Field(None, description="an upstream Orchestra does not launch")
    weight: float = Field(1.0, gt=0)
    kv_events: ReplicaKvEvents | None = Field(None, description="kv_aware: its KV events")
    gpu_ids: list[int] | None = None
    port: int | None = Field(None, ge=1, le=65535)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return check_url(value)


class ModelEngine(StrictSection):
    """`servers[].engine`: another OpenAI-compatible server run for this model, under the same
    lifecycle as vLLM (placement, swaps, drains, restarts, page cache, adoption, metrics).

    Its argument list is `command [model_arg] MODEL --served-model-name NAME --host H --port P
    [--api-key=KEY] extra_args server.extra_args`: none of vLLM's own flags (and none of the
    global `engine.extra_args` / `engine.env`, which are vLLM's)."""

    kind: str = Field("openai", min_length=1, description="what it is, as shown (`whisper`)")
    command: list[str] = Field(min_length=1)
    model_arg: str = Field("", description='flag before the model path; "" = positional')
    extra_args: list[str] = []
    env: dict[str, str] = {}
    health_path: str = Field("/health", pattern=r"^/", description="200 once ready")
    startup_timeout_s: float | None = Field(None, gt=0)


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
    engine: ModelEngine | None = Field(None, description="not vLLM: this model's own server")
    kv_events: bool | None = Field(
        None, description="vLLM KV-cache events (ZMQ); None = on when balancing is kv_aware"
    )
    kv: KvAwareConfig = KvAwareConfig()
    # Residency (helper C): the supervisor's idle unload (supervisor/idle.py).
    idle_unload_s: float | None = Field(
        None,
        gt=0,
        description="evict this model when nobody asked for it this long (llama-swap's ttl, "
        "Ollama's keep_alive); its page cache is kept warm; None = never",
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
        if self.engine is not None:
            self._check_own_engine()
        if self.gpu_ids is not None and len(self.gpu_ids) != self.tensor_parallel_size:
            raise ValueError(
                f"gpu_ids {self.gpu_ids} must list tensor_parallel_size "
                f"({self.tensor_parallel_size}) GPUs"
            )
        return self

    def _check_own_engine(self) -> None:
        """vLLM's features need vLLM: a model with its own `engine:` cannot ask for them."""
        vllm_only = {
            "sleep_mode": self.sleep_mode,
            "adapters": bool(self.adapters),
            "tensor_parallel_size": self.tensor_parallel_size > 1,
            "pipeline_parallel_size": self.pipeline_parallel_size > 1,
            "distributed_executor_backend": self.distributed_executor_backend is not None,
            "max_model_len": self.max_model_len is not None,
            "gpu_memory_utilization": self.gpu_memory_utilization is not None,
        }
        asked = [name for name, on in vllm_only.items() if on]
        if asked:
            raise ValueError(f"{', '.join(asked)}: vLLM's only, and this model has its own engine")
        if not self.managed:
            raise ValueError("`engine` is for a model the supervisor launches (`model:`)")

    @property
    def kind(self) -> str:
        """What serves this model: `vllm`, or its own engine's kind."""
        return "vllm" if self.engine is None else self.engine.kind

    @property
    def publishes_kv_events(self) -> bool:
        """Its vLLM engines are started with --kv-events-config (a model's own engine never)."""
        if self.engine is not None or not self.managed:
            return False
        return self.kv_events if self.kv_events is not None else self.balancing == "kv_aware"

    @property
    def managed(self) -> bool:
        """True when the supervisor launches this model's engines."""
        return self.url is None and not (self.replicas and self.replicas[0].url)
