"""The supervisor's config sections: `supervisor` (its control API, state, residency bounds),
`engine` (how engines are launched, probed, restarted and stopped), `rotation` (demand swaps)
and `preload` (page cache). Import them from `orchestra.config`, like every section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from orchestra.config.gateway import StrictSection
from orchestra.config.nodes import OnSupervisorExit


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
    # The swap scheduler (supervisor/turns.py) and the cost model (supervisor/costs.py).
    swap_quantum_s: float = Field(
        10.0,
        ge=0,
        description="the longest turn: a resident model in use keeps its slot up to this long "
        "before a waiting model may evict it; 0 = evict on the first arrival (the old policy)",
    )
    swap_quantum_ratio: float = Field(
        2.0,
        ge=0,
        description="a turn lasts this many times the waiting model's measured swap-in (wake "
        "or start), up to swap_quantum_s: swapping takes at most 1/(1+ratio) of the slot; 0 = "
        "always swap_quantum_s",
    )
    swap_max_wait_s: float = Field(
        30.0,
        gt=0,
        description="a swap waiting this long evicts the resident model even mid-quantum "
        "(the starvation bound, before the drain and the start; it caps the quantum)",
    )
    swap_idle_s: float = Field(
        2.0,
        ge=0,
        description="a resident with nothing in flight is still in its quantum while its last "
        "request is this recent (open-loop arrivals leave gaps)",
    )
    idle_check_interval_s: float = Field(
        1.0, gt=0, description="how often models are checked against their idle_unload_s"
    )
    cost_history: int = Field(
        8, ge=1, le=256, description="measured start/wake times kept per model (median of these)"
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
