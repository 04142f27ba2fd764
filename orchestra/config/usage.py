"""The usage ledger's, the budgets' and the prices' config (`gateway.usage`, `gateway.pricing`,
`gateway.api_keys[].budget`): read by `gateway/usage/` and `gateway/protection/budgets.py`.

Part of the one config model: import these from `orchestra.config`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(_Strict):
    """What one key may spend: tokens (prompt + completion) and cost per UTC day and month, and
    requests in flight at once. None = no limit of that kind."""

    tokens_per_day: int | None = Field(None, gt=0)
    tokens_per_month: int | None = Field(None, gt=0)
    cost_per_day: float | None = Field(None, gt=0, description="in the pricing table's unit")
    cost_per_month: float | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, gt=0, description="requests in flight at once")

    @property
    def limited(self) -> bool:
        return not (
            self.tokens_per_day is None
            and self.tokens_per_month is None
            and self.cost_per_day is None
            and self.cost_per_month is None
            and self.max_concurrent is None
        )


class Team(_Strict):
    """Keys that share a budget (`api_keys[].team`, or a key made at run time with a team):
    each call must fit both its key's budget and its team's."""

    budget: Budget


class Price(_Strict):
    """A model's price per million tokens, in whatever unit the operator counts (dollars, GPU
    hours): self-hosted users price their own GPUs."""

    input_per_1m: float = Field(0.0, ge=0)
    output_per_1m: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


class UsageConfig(_Strict):
    """The usage ledger (per key x model x hour) and the keys made at run time."""

    database_url: str | None = Field(
        None,
        description="sqlite:///path or postgresql://user:pass@host:port/db; None = SQLite "
        "(WAL) at <dir>/usage.sqlite3",
    )
    dir: Path = Field(Path(".orchestra"), description="where the default SQLite file lives")
    flush_s: float = Field(1.0, gt=0, description="how often the writer adds the counts")
    max_pending_rows: int = Field(
        10_000, gt=0, description="key x model x hour rows held while the database is away"
    )
    keys_refresh_s: float = Field(
        2.0, gt=0, description="how often keys made at run time are re-read (other workers')"
    )
    db_timeout_s: float = Field(5.0, gt=0, description="one database statement, connect too")
    max_key_labels: int = Field(
        1000, gt=0, description="distinct keys labelled in orchestra_key_tokens_total"
    )

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite://", "postgresql://")):
            raise ValueError(f"database_url must be sqlite:// or postgresql://, got {value!r}")
        return value

    def url(self) -> str:
        """The SQLAlchemy URL: postgresql:// is driven by psycopg (3)."""
        if self.database_url is None:
            return f"sqlite:///{self.dir / 'usage.sqlite3'}"
        if self.database_url.startswith("postgresql://"):
            return "postgresql+psycopg://" + self.database_url.removeprefix("postgresql://")
        return self.database_url
