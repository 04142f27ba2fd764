"""The gateway's config sections (`gateway`, `batch`, `fallback`) and what all sections share.

Part of the one config model: `orchestra.config` assembles these with the supervisor's and the
models' sections; import them from there.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestra.config.audit import AuditConfig
from orchestra.config.cache import CacheConfig
from orchestra.config.usage import Budget, Price, Team, UsageConfig
from orchestra.config.workloads import UploadConfig


class StrictSection(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {value!r}")
    return value.rstrip("/") if value else value


class Timeouts(StrictSection):
    connect_s: float = Field(2.0, gt=0)
    first_byte_s: float = Field(120.0, gt=0)
    idle_read_s: float = Field(60.0, gt=0)
    total_s: float = Field(3600.0, gt=0, description="hard bound on one upstream request")
    ensure_s: float = Field(900.0, gt=0, description="how long a request waits for a cold model")
    health_probe_s: float = Field(2.0, gt=0)


class RetryPolicy(StrictSection):
    max_attempts: int = Field(3, ge=1, description="tries per request, first one included")
    budget_ratio: float = Field(
        0.2, ge=0, description="retries allowed as a fraction of recent requests (plus a floor)"
    )
    budget_floor: int = Field(10, ge=0)
    backoff_s: float = Field(0.05, ge=0)


class ApiKey(StrictSection):
    name: str
    sha256: str = Field(description="hex sha256 of the key; never the key itself")
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    budget: Budget | None = None  # tokens/cost per day and month, requests in flight
    team: str | None = Field(None, description="a name of gateway.teams: its budget holds too")


class ResponsesConfig(StrictSection):
    """The Responses API's stored responses (`gateway/pipeline/responses.py`)."""

    max_stored: int = Field(
        50_000, gt=0, description="response ids remembered per worker (about 200 bytes each)"
    )


class ConsoleConfig(StrictSection):
    """The web console at `/console` (admin key, or loopback only without one)."""

    enabled: bool = True
    refresh_s: float = Field(1.0, gt=0, description="how often the page's live feed updates")
    rate_window_s: float = Field(30.0, gt=0, description="request/token rates span this long")
    chart_step_s: float = Field(
        10.0, ge=1, description="the charts' interval: one point per this many seconds"
    )
    chart_window_s: float = Field(
        3600.0, gt=0, le=86400, description="the charts span this long (kept in memory)"
    )

    @model_validator(mode="after")
    def _chart_points(self) -> ConsoleConfig:
        # each point costs ~230 bytes per model (its TTFT bins): 3600 points is ~0.8 MB
        if self.chart_window_s / self.chart_step_s > 3600:
            raise ValueError("console.chart_window_s / chart_step_s must be at most 3600 points")
        return self


class GatewayConfig(StrictSection):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    timeouts: Timeouts = Timeouts()
    retries: RetryPolicy = RetryPolicy()
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    unhealthy_cooldown_s: float = Field(5.0, gt=0)
    errors_to_mark_down: int = Field(
        3,
        ge=1,
        description="consecutive HTTP 500 replies that take a replica out of rotation (a 500 "
        "is usually one request's error; 502/503/504, connect errors and timeouts act at once)",
    )
    health_check_interval_s: float = Field(2.0, gt=0)
    max_connections_per_upstream: int = Field(512, gt=0)
    supervisor_url: str | None = Field(
        None, description="control API of the supervisor; None = derived from supervisor section"
    )
    routing_refresh_s: float = Field(
        1.0, gt=0, description="how often the gateway syncs with the supervisor (table, demand)"
    )
    node_down_after_s: float = Field(
        5.0,
        gt=0,
        description="a node whose supervisor stops answering this long leaves rotation (its "
        "engines that still answer /health stay)",
    )
    upstream_keepalive_s: float = Field(
        4.0, gt=0, description="below uvicorn's 5 s so we never reuse a socket vLLM is closing"
    )
    api_keys: list[ApiKey] = []
    admin_key_sha256: str | None = None
    drain_timeout_s: float = Field(30.0, ge=0)
    queue_timeout_s: float = Field(
        30.0, gt=0, description="longest wait in a model's admission queue before 429"
    )
    overload_retry_after_s: float = Field(1.0, gt=0, description="Retry-After on a 429")
    priority_header: str = Field(
        "x-orchestra-priority", description="request header with an int; lower = served first"
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="gateway processes sharing the port (SO_REUSEPORT); None = one per core, "
        "at most 8. Rate limits and admission caps are divided exactly among them",
    )
    redis_url: str | None = Field(
        None,
        description="rate limits shared in Redis (redis://host:port/db) by every worker; "
        "None = each worker holds its exact share",
    )
    redis_timeout_s: float = Field(0.5, gt=0, description="one Redis call (connect included)")
    ratelimit_default_completion_tokens: int = Field(
        256, ge=0, description="tokens/min charge for a request without max_tokens"
    )
    uploads: UploadConfig = UploadConfig()
    responses: ResponsesConfig = ResponsesConfig()
    console: ConsoleConfig = ConsoleConfig()
    loading_comments: bool = Field(
        False,
        description="streamed requests for a model that is loading get `: loading MODEL, N s` "
        "SSE comments while they wait (the 200 is sent at once: a failed load becomes an error "
        "event, not a retryable 503); per model: servers[].loading_comments",
    )
    loading_comment_interval_s: float = Field(5.0, gt=0, description="between loading comments")
    usage: UsageConfig = UsageConfig()
    pricing: dict[str, Price] = Field({}, description="model name -> price per 1M tokens")
    teams: dict[str, Team] = Field({}, description="team name -> a budget its keys share")
    cache: CacheConfig = CacheConfig()  # exact-match replies (gateway/pipeline/cache.py)
    audit: AuditConfig | None = None  # the audit trail (gateway/audit/); None: off

    @model_validator(mode="after")
    def _known_teams(self) -> GatewayConfig:
        for key in self.api_keys:
            if key.team is not None and key.team not in self.teams:
                raise ValueError(
                    f"api_keys: key `{key.name}` names team `{key.team}`, "
                    "which gateway.teams does not have"
                )
        return self


class AffinityConfig(StrictSection):
    """Knobs of the `prefix_aware` and `session` policies (docs/balancing.md)."""

    block_chars: int = Field(
        128, ge=16, description="prefix_aware: characters per hashed block of the prompt"
    )
    max_blocks: int = Field(
        64, ge=1, description="prefix_aware: leading blocks hashed per request (CPU bound)"
    )
    table_size: int = Field(
        65536, ge=1, description="prefix_aware: block hashes remembered (LRU), all replicas"
    )
    load_gate: float = Field(
        8.0,
        ge=0,
        description="prefix_aware: leave the best-matching replica when its running+waiting "
        "exceeds the least-loaded replica's by more than this",
    )
    session_header: str = Field("x-session-id", description="session: the session key header")
    virtual_nodes: int = Field(
        160, ge=1, description="session: points per replica on the consistent-hash ring"
    )


class BatchConfig(StrictSection):
    """The Files + Batches API (`gateway/batch/`): where batches live and how they are paced."""

    enabled: bool = True
    dir: Path = Field(Path(".orchestra/batch"), description="uploaded and result files")
    db_path: Path | None = Field(None, description="SQLite store; None = <dir>/batch.sqlite3")
    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0, description="POST /v1/files limit")
    max_rows: int = Field(50_000, gt=0, description="input lines per batch")
    priority: int = Field(1000, description="admission priority of batch rows; lower = sooner")
    min_concurrency: int = Field(1, ge=1, description="rows in flight per model, at least")
    max_concurrency: int = Field(64, ge=1, description="rows in flight per model, at most")
    gauge_poll_s: float = Field(1.0, gt=0, description="how often vLLM's queue gauges are read")
    poll_s: float = Field(0.5, gt=0, description="how often the runner looks for work")
    row_attempts: int = Field(
        3, ge=1, description="sends of a row refused for room (429: admission, rate limit)"
    )
    row_backoff_s: float = Field(1.0, ge=0, description="wait before sending a refused row again")
    charge_keys: bool = Field(
        True, description="rows count against the rate limits of the key that submitted them"
    )
    cancel_grace_s: float = Field(30.0, ge=0, description="in-flight rows finish within this")


class OllamaFallback(StrictSection):
    url: str = "http://127.0.0.1:11434"
    models: dict[str, str] = Field({}, description="orchestra model name -> ollama tag")
    timeout_s: float = Field(120.0, gt=0)
    connect_timeout_s: float = Field(2.0, gt=0)
    first_byte_timeout_s: float = Field(60.0, gt=0)
    idle_read_timeout_s: float = Field(60.0, gt=0)
    health_check_interval_s: float = Field(5.0, gt=0, description="GET /api/version period")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_url(value) or value


class FallbackConfig(StrictSection):
    ollama: OllamaFallback | None = None


class RayClusterConfig(StrictSection):
    """`ray:`: Orchestra on a Ray cluster (docs/multi-node.md). Read by `orchestra ray up` (which
    supervisor runs where) and by the gateway (which supervisors are alive); instead of a
    `supervisors:` list."""

    address: str = Field(
        "auto", description="Ray's GCS, e.g. 10.0.0.1:6379; `auto` = the cluster on this machine"
    )
    namespace: str = Field("orchestra", min_length=1, description="Ray namespace of the actors")
    node_resource: str | None = Field(
        None,
        description="a node gets a supervisor when Ray reports this custom resource on it (CPU "
        "nodes: `ray start --resources='{\"orchestra\": 1}'`); None = nodes with a GPU",
    )
    admin_token: str | None = Field(
        None, description="every supervisor's admin token; None = supervisor.admin_token"
    )
    discover_s: float = Field(
        0.5, gt=0, description="how often the gateway reads Ray's nodes and supervisors"
    )
    reconcile_s: float = Field(
        1.0, gt=0, description="how often `ray up`'s reconciler looks for nodes without one"
    )
    call_timeout_s: float = Field(10.0, gt=0, description="one call to a Ray actor or the GCS")
    start_timeout_s: float = Field(
        120.0, gt=0, description="a supervisor actor's control API answers within this"
    )
