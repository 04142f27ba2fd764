"""The web console in a real headless Chromium, against a real supervisor managing fake engines
and a real gateway: the page loads behind the admin key, shows the models, a load action
changes a model's state on the page (through starting, to ready, over the live feed), and the
playground streams an answer. A screenshot is kept under the test output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.gateway.protection.keys import hash_key
from tests.conftest import GatewayProcess, wait_until
from tests.fake_engine import free_port
from tests.integration.supervisor.helpers import SupervisorProcess, config_dict, server

from .browser import ARGS, CHROMIUM, output_dir
from .conftest import alpha_ready

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]

ADMIN_KEY = "console-test-admin-key"
COLD = "beta-a-rather-long-model-name-from-the-rotation-pool"
BROKEN = "gamma"  # its engine fails at start: FAILED, with a last error to show


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[SupervisorProcess, GatewayProcess]]:
    config: dict[str, Any] = config_dict(
        tmp_path,
        [server("alpha", tmp_path, "--token-rate", "4")],
        pool=[
            server(COLD, tmp_path, "--startup-delay", "2"),
            server(BROKEN, tmp_path, "--fail-start"),
        ],
        engine={"max_restarts": 1},
    )
    config["gateway"] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "routing_refresh_s": 0.2,
        "drain_timeout_s": 1,
        "admin_key_sha256": hash_key(ADMIN_KEY),
        "timeouts": {"ensure_s": 30},
        "console": {"refresh_s": 0.25, "rate_window_s": 10},
    }
    with alpha_ready(config, tmp_path) as running:
        yield running


def test_console_needs_the_admin_key(stack: tuple[SupervisorProcess, GatewayProcess]) -> None:
    _, gateway = stack
    denied = httpx.get(gateway.url + "/console", timeout=10)
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"].startswith("Basic")
    assert denied.json()["error"]["code"] == "invalid_admin_key"
    allowed = httpx.get(gateway.url + "/console", auth=("admin", ADMIN_KEY), timeout=10)
    assert allowed.status_code == 200 and "alpha" in allowed.text
    bearer = {"authorization": f"Bearer {ADMIN_KEY}"}
    snap = httpx.get(gateway.url + "/console/api/snapshot", headers=bearer, timeout=10).json()
    states = {m["name"]: m["state"] for m in snap["models"]}
    assert states == {"alpha": "ready", COLD: "cold", BROKEN: "cold"}


def test_console_in_chromium(
    chromium: None, stack: tuple[SupervisorProcess, GatewayProcess]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    supervisor, gateway = stack
    failed = httpx.post(f"{supervisor.url}/models/{BROKEN}/load", timeout=30)
    assert failed.status_code >= 500
    wait_until(lambda: supervisor.models()[BROKEN]["state"] == "failed", 20, what="FAILED")
    for _ in range(3):  # some traffic, so the rate columns have figures
        chat = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(gateway.url + "/v1/chat/completions", json=chat, timeout=30).is_success
    shots = output_dir("console")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(
                http_credentials={"username": "admin", "password": ADMIN_KEY},
                viewport={"width": 1400, "height": 860},
            )
            page = context.new_page()
            page.goto(gateway.url + "/console")

            # The page, server-rendered, then live over SSE.
            rows = page.locator("#model-rows tr")
            expect(page.locator("tr[data-model='alpha']")).to_have_attribute("data-state", "ready")
            expect(page.locator(f"tr[data-model='{COLD}']")).to_have_attribute("data-state", "cold")
            assert rows.count() == 3
            expect(page.locator("#live")).to_have_text("live", timeout=10_000)
            # rates need two samples of the counters: then alpha's req/s cell has a figure
            expect(page.locator("tr[data-model='alpha'] td.num").nth(3)).not_to_have_text("-")

            # A load action: the model goes through `starting` (and shows as a swap) to `ready`.
            cold_row = page.locator(f"tr[data-model='{COLD}']")
            cold_row.locator("button[data-action='load']").click()
            expect(cold_row).to_have_attribute("data-state", "starting", timeout=10_000)
            expect(page.locator(f"#swaps li[data-model='{COLD}']")).to_be_visible()
            page.screenshot(path=str(shots / "console-swapping.png"), full_page=True)
            expect(page.locator(f"tr[data-model='{COLD}']")).to_have_attribute(
                "data-state", "ready", timeout=20_000
            )
            assert supervisor.models()[COLD]["state"] == "ready"
            expect(page.locator("#action-result")).to_contain_text(f"load {COLD}: ready")

            # The last error, on demand; it stays open across live updates.
            error = page.locator(f"tr[data-model='{BROKEN}'] details")
            expect(page.locator(f"tr[data-model='{BROKEN}']")).to_have_attribute(
                "data-state", "failed"
            )
            error.locator("summary").click()
            expect(error.locator("pre")).to_contain_text("Engine core initialization failed")
            ticks = page.evaluate("window.consoleUpdates")
            wait_until(lambda: page.evaluate("window.consoleUpdates") >= ticks + 2, timeout=10)
            assert error.get_attribute("open") is not None

            # The playground streams an answer, token by token.
            page.select_option("#pg-model", "alpha")
            page.fill("#pg-prompt", "What is the capital of France?")
            page.click("#pg-send")
            output = page.locator("#pg-output")
            seen: set[str] = set()

            def finished() -> bool:
                seen.add(output.inner_text())
                return output.get_attribute("data-done") == "1"

            wait_until(finished, timeout=20, interval=0.05, what="the playground's answer")
            answer = "The capital of France is Paris."
            assert output.inner_text() == answer
            partial = {s for s in seen if s and s != answer}
            assert partial and all(answer.startswith(s) for s in partial), seen
            expect(page.locator("#pg-status")).to_have_text("6 tokens")
            # ... and shows in alpha's live rates: requests/s and tokens/s (6 in the window).
            alpha_rates = page.locator("tr[data-model='alpha'] td.num")
            expect(alpha_rates.nth(6)).not_to_have_text("0.0", timeout=10_000)
            expect(alpha_rates.nth(3)).not_to_have_text("0.00")
            page.screenshot(path=str(shots / "console.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "console.png").stat().st_size > 10_000
