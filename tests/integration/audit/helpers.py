"""What the audit tests share: a gateway with two keys and an admin key in front of one fake
engine (`m`), writing its audit trail under the test's folder; the trail read back whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from orchestra.gateway.audit.read import files
from orchestra.gateway.protection.keys import hash_key
from tests.conftest import GatewayProcess, fast_gateway_section
from tests.fake_engine import FakeEngineProcess, free_port

KEY_A, KEY_B, ADMIN = "sk-audit-team-a", "sk-audit-team-b", "sk-audit-admin"


def gateway(
    engine: FakeEngineProcess,
    trail: Path,
    audit: dict[str, Any] | None = None,
    keys: bool = True,
    batch: dict[str, Any] | None = None,
    **section: Any,
) -> GatewayProcess:
    """`keys`: team-a's and team-b's API keys (False: open, as the bench's gateway); `batch`:
    the batch section (default: off)."""
    api_keys = [
        {"name": "team-a", "sha256": hash_key(KEY_A)},
        {"name": "team-b", "sha256": hash_key(KEY_B)},
    ]
    gw_section = fast_gateway_section(
        free_port(),
        api_keys=api_keys if keys else [],
        admin_key_sha256=hash_key(ADMIN),
        usage={"dir": str(trail.parent), "flush_s": 0.2, "keys_refresh_s": 0.2},
        audit={"path": str(trail), **(audit or {})},
        **section,
    )
    config = {
        "gateway": gw_section,
        "servers": [{"name": "m", "url": engine.url}],
        "batch": batch or {"enabled": False},
    }
    gw = GatewayProcess(config)
    gw.start_timeout = 90.0  # several workers start slowly on a busy machine
    return gw


def raw_lines(trail: Path) -> list[bytes]:
    """Every line of the trail's files, oldest file first."""
    out: list[bytes] = []
    for name in files(trail):
        out.extend(name.read_bytes().splitlines(keepends=True))
    return out


def lines(trail: Path) -> list[dict[str, Any]]:
    """Every line, parsed: each must be one whole JSON object ending in a newline."""
    parsed = []
    for raw in raw_lines(trail):
        assert raw.endswith(b"\n"), raw
        record = orjson.loads(raw)
        assert isinstance(record, dict), raw
        parsed.append(record)
    return parsed
