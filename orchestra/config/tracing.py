"""The `tracing:` section: OpenTelemetry traces (OTLP over HTTP) from the gateway, the
supervisor's swaps and the vLLM engines (docs/observability.md). Absent: no tracing at all.

Part of the one config model: import it from `orchestra.config`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestra.config.gateway import check_url


class TracingConfig(BaseModel):
    """Where spans go and how many requests are traced."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(
        description="the collector's OTLP/HTTP base URL (e.g. http://collector:4318); spans "
        "are posted to <endpoint>/v1/traces"
    )
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="the share of new traces recorded (a client's "
        "sampled traceparent is followed either way)",
    )
    service_name: str = Field("orchestra-gateway", min_length=1)
    export_timeout_s: float = Field(
        10.0, gt=0, description="bound on one export of a batch of spans to the collector"
    )

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        checked = check_url(value)
        assert checked is not None
        return checked

    @property
    def traces_url(self) -> str:
        """OTLP/HTTP's traces path under the base URL: the one both the SDK's exporter and
        vLLM's `--otlp-traces-endpoint` are given."""
        return f"{self.endpoint}/v1/traces"
