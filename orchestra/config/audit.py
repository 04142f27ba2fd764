"""The audit trail's config (`gateway.audit`): read by `gateway/audit/` and `orchestra audit`.

Absent (the default), nothing is audited. Part of the one config model: import it from
`orchestra.config`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class AuditConfig(BaseModel):
    """One JSON line per finished request and per admin action (docs/observability.md)."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(
        Path("logs/audit.jsonl"),
        description="the live file (relative: to the gateway's working directory); rotated "
        "files are PATH.1 (newest) ... PATH.<keep>",
    )
    max_bytes: int = Field(
        100 * 1024 * 1024, ge=4096, description="the live file is rotated before it passes this"
    )
    keep: int = Field(5, ge=0, le=1000, description="rotated files kept (0: none, only the live)")
    capture_bodies: bool = Field(
        False,
        description="add request and whole-reply bodies to the lines: they hold prompts (personal "
        "data, secrets) and make the file grow fast",
    )
    max_body_bytes: int = Field(
        16 * 1024, gt=0, description="with capture_bodies: each body cut to this many bytes"
    )
    queue_size: int = Field(
        50_000,
        gt=0,
        description="lines waiting for the writer, per worker; past it a line is dropped "
        "(orchestra_audit_dropped_total), never the request slowed",
    )
    flush_s: float = Field(
        0.5,
        gt=0,
        le=1.0,
        description="the writer writes at least this often (a kill -9 loses "
        "at most the lines of this long)",
    )
