"""The console's "Last hour" charts in a real headless Chromium, against a real supervisor
managing fake engines and a real gateway: after traffic (answers, server errors, streamed
tokens) and a swap of a cold model, each model's four charts are drawn as inline SVG with data,
and the swap's markers (starting, ready) stand on the swapped model's charts. The screenshot is
kept under the test output (test-output/console-charts/charts.png)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess, wait_until
from tests.fake_engine import free_port
from tests.integration.supervisor.helpers import SupervisorProcess, config_dict, server

from .browser import ARGS, CHROMIUM, output_dir
from .conftest import alpha_ready

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]

COLD = "beta"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[SupervisorProcess, GatewayProcess]]:
    config: dict[str, Any] = config_dict(
        tmp_path,
        [server("alpha", tmp_path, "--token-rate", "200", "--ttft-ms", "30")],
        pool=[server(COLD, tmp_path, "--startup-delay", "1.5", "--ttft-ms", "80")],
    )
    config["gateway"] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "routing_refresh_s": 0.2,
        "drain_timeout_s": 1,
        "errors_to_mark_down": 100,  # the injected 500s must not take alpha's engine out
        "timeouts": {"ensure_s": 30},
        # one point a second over two minutes: the test's traffic makes a visible shape
        "console": {"refresh_s": 0.5, "chart_step_s": 1, "chart_window_s": 120},
    }
    with alpha_ready(config, tmp_path) as running:
        yield running


def _chat(url: str, model: str, stream: bool) -> int:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 16,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code


def _traffic(supervisor: SupervisorProcess, gateway: GatewayProcess) -> None:
    """A few seconds of uneven traffic on alpha, two server errors, then the cold model swapped
    in by a request (its first request waits for the swap) and served."""
    for second in range(6):
        began = time.monotonic()
        for i in range(2 + 2 * (second % 3)):
            assert _chat(gateway.url, "alpha", stream=i % 2 == 0) == 200
        if second == 3:
            engine = supervisor.models()["alpha"]["upstreams"][0]
            httpx.post(engine + "/fake/fault", json={"kind": "500", "count": 2}, timeout=10)
            assert [_chat(gateway.url, "alpha", False) for _ in range(2)] == [500, 500]
        next_second = began + 1.0  # paced: one burst a second
        wait_until(lambda t=next_second: time.monotonic() >= t, timeout=5, interval=0.05)
    assert _chat(gateway.url, COLD, stream=True) == 200  # waits for the swap
    for _ in range(3):
        assert _chat(gateway.url, COLD, stream=False) == 200


def test_charts_in_chromium(
    chromium: None, stack: tuple[SupervisorProcess, GatewayProcess]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    supervisor, gateway = stack
    # The page is open before the swap, like an operator's: markers come from state changes
    # the gateway sees, whoever looks.
    _traffic(supervisor, gateway)
    wait_until(
        lambda: (
            {m["state"] for m in httpx.get(gateway.url + "/console/api/series").json()["markers"]}
            >= {"starting", "ready"}
        ),
        timeout=20,
        what="the swap's markers",
    )
    shots = output_dir("console-charts")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(gateway.url + "/console")
            alpha = page.locator(".chart-row[data-model='alpha']")
            expect(alpha.locator("figure.chart")).to_have_count(4, timeout=15_000)
            for key in ("requests_per_s", "errors_per_s", "ttft_p50_s", "ttft_p95_s"):
                expect(alpha.locator(f"path[data-key='{key}']")).to_have_count(1)
            expect(alpha.locator("path[data-key='tokens_per_s']")).to_have_count(1)
            maxima = [
                float(m)
                for m in alpha.locator("figure.chart").evaluate_all(
                    "boxes => boxes.map(b => b.dataset.max)"
                )
            ]
            assert all(m > 0 for m in maxima), maxima  # every chart has data
            beta = page.locator(f".chart-row[data-model='{COLD}']")
            expect(beta.locator("line.marker.m-starting")).to_have_count(4)  # one per chart
            expect(beta.locator("line.marker.m-ready")).to_have_count(4)
            title = beta.locator("line.marker.m-ready title").first.text_content() or ""
            assert title.startswith(f"{COLD}: starting → ready"), title
            # It keeps refreshing: the next draw comes without a reload.
            drawn = page.evaluate("window.chartUpdates")
            wait_until(lambda: page.evaluate("window.chartUpdates") > drawn, timeout=10)
            page.locator("#charts").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "charts.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "charts.png").stat().st_size > 10_000
