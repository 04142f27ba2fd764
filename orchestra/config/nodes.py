"""Config pieces for more than one machine: the supervisors a gateway talks to.

`supervisors:` lists every node's control API. Left empty, the gateway talks to the one local
supervisor of the `supervisor:` section (today's single-node setup).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LOOPBACK = ("127.0.0.1", "localhost", "::1")
OnSupervisorExit = Literal["adopt", "kill"]


class SupervisorEndpoint(BaseModel):
    """One node: its supervisor's control API and the admin token it requires."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the node's name in logs and /admin/status")
    url: str = Field(description="control API, e.g. http://10.0.0.2:8100")
    admin_token: str | None = Field(None, description="that supervisor's supervisor.admin_token")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")
