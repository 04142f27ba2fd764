"""What the usage tests share: a gateway with two keys, an admin key and a price for `m`, in
front of a fake engine (whose usage is exact: one prompt token per word, `max_tokens` out)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import openai

from orchestra.gateway.protection.keys import hash_key
from tests.conftest import REPO_ROOT, GatewayProcess, fast_gateway_section
from tests.fake_engine import FakeEngineProcess, free_port

KEY_A, KEY_B, ADMIN = "sk-team-a", "sk-team-b", "sk-admin"
PRICE = {"input_per_1m": 1.0, "output_per_1m": 2.0}


def gateway(
    engine: FakeEngineProcess,
    usage: dict[str, Any],
    budget_a: dict[str, Any] | None = None,
    batch: dict[str, Any] | None = None,
    engine_args: dict[str, Any] | None = None,
    **section: Any,
) -> GatewayProcess:
    keys = [
        {"name": "team-a", "sha256": hash_key(KEY_A), "budget": budget_a},
        {"name": "team-b", "sha256": hash_key(KEY_B)},
    ]
    gw_section = fast_gateway_section(
        free_port(),
        api_keys=keys,
        admin_key_sha256=hash_key(ADMIN),
        pricing={"m": PRICE},
        usage={"flush_s": 0.2, "keys_refresh_s": 0.2, **usage},
        **section,
    )
    servers = [{"name": "m", "url": engine.url, **(engine_args or {})}]
    config = {"gateway": gw_section, "servers": servers, "batch": batch or {"enabled": False}}
    gw = GatewayProcess(config)
    gw.start_timeout = 90.0  # several workers start slowly on a busy machine
    return gw


def client(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30)


def admin(gw: GatewayProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, gw.url + path, headers=headers, timeout=30, **kwargs)


def totals(gw: GatewayProcess, **query: str) -> dict[tuple[str, str], dict[str, Any]]:
    reply = admin(gw, "GET", "/admin/usage", params=query)
    assert reply.status_code == 200, reply.text
    return {(t["key"], t["model"]): t for t in reply.json()["totals"]}


def some_calls(gw: GatewayProcess) -> None:
    """team-a: two completions (3 + 5 tokens each) and a stream with usage (2 + 4); team-b: one
    completion (1 + 2) and a call of a model that does not exist (404)."""
    a, b = client(gw, KEY_A), client(gw, KEY_B)
    for _ in range(2):
        done = a.completions.create(model="m", prompt="one two three", max_tokens=5)
        assert done.usage is not None and done.usage.total_tokens == 8
    stream = a.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert [c.usage.total_tokens for c in stream if c.usage] == [6]
    b.completions.create(model="m", prompt="one", max_tokens=2)
    try:
        b.completions.create(model="nope", prompt="one", max_tokens=2)
        raise AssertionError("an unknown model was served")
    except openai.NotFoundError:
        pass


def expected_after_some_calls(times: int) -> dict[tuple[str, str], dict[str, Any]]:
    a_prompt, a_completion = 8 * times, 14 * times
    return {
        ("team-a", "m"): {
            "requests": 3 * times,
            "errors": 0,
            "prompt_tokens": a_prompt,
            "completion_tokens": a_completion,
            "cost": (a_prompt * 1.0 + a_completion * 2.0) / 1e6,
        },
        ("team-b", "m"): {
            "requests": times,
            "errors": 0,
            "prompt_tokens": times,
            "completion_tokens": 2 * times,
            "cost": (times + 4.0 * times) / 1e6,
        },
        ("team-b", "_unknown"): {"requests": times, "errors": times, "prompt_tokens": 0},
    }


def matches(got: dict[tuple[str, str], dict[str, Any]], want: dict[Any, dict[str, Any]]) -> bool:
    for row, counts in want.items():
        if row not in got:
            return False
        for name, value in counts.items():
            if abs(got[row][name] - value) > 1e-9:
                return False
    return True


def cli(
    gw_url: str, *args: str, admin_key: str | None = ADMIN, columns: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`orchestra ARGS --gateway-url GW_URL` with `admin_key` (None: none at all)."""
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRA_ADMIN_KEY"}
    if admin_key:
        env["ORCHESTRA_ADMIN_KEY"] = admin_key
    if columns is not None:
        env["COLUMNS"] = str(columns)  # rich's table width
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli", *args, "--gateway-url", gw_url],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=False,
    )
