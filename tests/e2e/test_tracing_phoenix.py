"""Traces end to end, in a real collector: Arize Phoenix (tests/phoenix.py) receives the
gateway's spans and the real vLLM CPU engine's (the supervisor starts it with
`--otlp-traces-endpoint`). A chat through the gateway is one trace in Phoenix in which the
engine's span descends from the gateway's request span through the attempt span whose context
the engine was sent; a request for a cold model shows the supervisor's swap under its ensure.

On the e2e session stack (tests/e2e/conftest.py), traced into Phoenix from its start: one
engine resident at a time, so a request for the name not resident waits for a real swap.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import (
    COLD,
    HOT,
    START_TIMEOUT_S,
    Stack,
    record_figure,
)
from tests.integration.console.browser import ARGS, CHROMIUM, install_chromium, output_dir
from tests.phoenix import PhoenixProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

SERVER_SPAN = "POST /v1/chat/completions"
ENGINE_SPAN = "llm_request"  # vLLM's span per request (vllm/v1/engine/output_processor.py)
# The gateway batches its exports every few seconds; vLLM's, too.
ARRIVE_TIMEOUT_S = 90.0


@pytest.fixture
def phoenix(stack: Stack) -> PhoenixProcess:
    if isinstance(stack.phoenix, str):
        pytest.fail(stack.phoenix)
    return stack.phoenix


def _resident(stack: Stack) -> tuple[str, str]:
    """(the name resident, the other): the session's swaps before leave either."""
    return (HOT, COLD) if stack.model(HOT)["state"] == "ready" else (COLD, HOT)


def _attributes(span: dict[str, Any]) -> dict[str, Any]:
    """Phoenix's span attributes, flattened to dotted keys (it may nest them)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = value

    walk("", span.get("attributes") or {})
    return flat


def _ids(span: dict[str, Any]) -> tuple[str, str, str | None]:
    context = span["context"]
    return context["trace_id"], context["span_id"], span.get("parent_id")


def _chat(stack: Stack, model: str, request_id: str) -> httpx.Response:
    reply = httpx.post(
        stack.gateway.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8},
        headers={"x-request-id": request_id},
        timeout=START_TIMEOUT_S,
    )
    assert reply.status_code == 200, reply.text
    return reply


def _ancestors(span: dict[str, Any], spans: list[dict[str, Any]]) -> list[str]:
    """The names of `span`'s ancestors, its parent first."""
    by_id = {_ids(s)[1]: s for s in spans}
    names, at = [], span
    while (parent := at.get("parent_id")) in by_id:
        at = by_id[parent]
        names.append(at["name"])
    return names


def _trace_of(phoenix: PhoenixProcess, request_id: str) -> list[dict[str, Any]]:
    """The trace whose gateway span carries `request_id`, once the engine's span is in it."""
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        nonlocal found
        spans = phoenix.spans()
        server = [
            s
            for s in spans
            if s["name"] == SERVER_SPAN and _attributes(s).get("orchestra.request_id") == request_id
        ]
        if not server:
            return False
        trace_id = _ids(server[0])[0]
        found = [s for s in spans if _ids(s)[0] == trace_id]
        return any(s["name"] == ENGINE_SPAN for s in found)

    wait_until(arrived, timeout=ARRIVE_TIMEOUT_S, interval=1.0, what="the trace in Phoenix")
    return found


def test_a_chat_is_one_trace_with_the_engines_span_under_the_gateways(
    stack: Stack, phoenix: PhoenixProcess
) -> None:
    resident, _ = _resident(stack)
    sent = time.monotonic()
    reply = _chat(stack, resident, "e2e-trace-1")
    spans = _trace_of(phoenix, "e2e-trace-1")
    record_figure("e2e_trace_in_phoenix_s", round(time.monotonic() - sent, 1))
    (server,) = [s for s in spans if s["name"] == SERVER_SPAN]
    (engine,) = [s for s in spans if s["name"] == ENGINE_SPAN]
    (attempt,) = [s for s in spans if s["name"] == "upstream attempt"]

    # The engine's span is the attempt's child, the attempt a descendant of the request's.
    assert engine.get("parent_id") == _ids(attempt)[1]
    assert _ancestors(attempt, spans)[-1] == SERVER_SPAN
    assert server.get("parent_id") in (None, "")

    attrs = _attributes(server)
    usage = reply.json()["usage"]
    assert attrs["http.response.status_code"] == 200
    assert attrs["gen_ai.request.model"] == resident
    assert attrs["orchestra.served_by"] == resident
    assert attrs["orchestra.replica"] == reply.headers["x-orchestra-replica"]
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert _attributes(attempt)["orchestra.outcome"] == "answered"
    # vLLM's own span is this request's: its token counts are the reply's.
    assert _attributes(engine)["gen_ai.usage.completion_tokens"] == usage["completion_tokens"]
    _screenshot(phoenix, _ids(server)[0])


def _screenshot(phoenix: PhoenixProcess, trace_id: str) -> None:
    """The trace as a person sees it in Phoenix's UI (test-output/tracing/trace.png; the one in
    docs/observability.md), where Chromium and Playwright are installed (the console tests'
    browser, tests/integration/console/browser.py)."""
    if install_chromium() is not None:
        return
    from playwright.sync_api import sync_playwright

    projects = httpx.get(phoenix.url + "/v1/projects", timeout=30).json()["data"]
    project = next(p["id"] for p in projects if p["name"] == "default")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{phoenix.url}/projects/{project}/traces/{trace_id}", timeout=60_000)
            # The span tree is drawn once the trace's spans are loaded: the engine's is last.
            page.get_by_text(ENGINE_SPAN).first.wait_for(timeout=60_000)
            page.screenshot(path=str(output_dir("tracing") / "trace.png"))
        finally:
            browser.close()


SWAP_SPANS = frozenset({"ensure", "swap", "place", "evict", "drain", "stop", "start and ready"})


def _swap_traces(phoenix: PhoenixProcess) -> list[list[dict[str, Any]]]:
    """Every trace in Phoenix with a whole swap in it and the engine's span that followed
    (the supervisor exports in batches: `swap` ends last and may come after the rest)."""
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in phoenix.spans():
        by_trace.setdefault(_ids(span)[0], []).append(span)
    return [
        spans
        for spans in by_trace.values()
        if SWAP_SPANS | {ENGINE_SPAN} <= {s["name"] for s in spans}
    ]


def test_a_request_that_waited_for_a_swap_shows_the_supervisors_swap(
    stack: Stack, phoenix: PhoenixProcess
) -> None:
    """A request for the name not resident: the gateway's ensure waits for the supervisor's
    swap (the resident engine drained and stopped, the other started), whose spans join the
    request's trace through the ensure call's traceparent. The session's tests before this
    one swapped under traffic (test_real_engine.py, test_real_engine_views.py): their traces
    are read rather than a real engine start spent on one more; run alone, this module
    causes its own swap."""
    if stack.supervisor.metric("orchestra_supervisor_swaps_total") == 0:
        _, other = _resident(stack)
        _chat(stack, other, "e2e-trace-swap")
    traces = wait_until(
        lambda: _swap_traces(phoenix),
        timeout=ARRIVE_TIMEOUT_S,
        interval=1.0,
        what="a swap's spans in Phoenix",
    )
    spans = traces[-1]
    (swap,) = [s for s in spans if s["name"] == "swap"]
    assert "ensure" in _ancestors(swap, spans)
    assert _ancestors(swap, spans)[-1] == SERVER_SPAN  # the request's (every swap here is a chat's)
    (evict,) = [s for s in spans if s["name"] == "evict"]
    evicted, started = _attributes(evict)["orchestra.model"], _attributes(swap)["orchestra.model"]
    assert {evicted, started} == {HOT, COLD}, (evicted, started)
    (engine,) = [s for s in spans if s["name"] == ENGINE_SPAN]
    assert _ancestors(engine, spans)[0] == "upstream attempt"
