"""The whole path on a real vLLM CPU engine: OpenAI SDK -> gateway -> supervisor-run vLLM.

Tests run in file order on one session stack (see conftest): plain serving first, then the
tests that kill and swap engines. The cold start evicted vs warm is a figure, not a check: the
bench's `--swap` leg measures it on a running stack (README, "More"); what it rested on is
checked in cheaper tests (page-cache eviction and preload: tests/unit/supervisor/
test_pagecache.py and tests/integration/supervisor/test_pagecache_live.py; a load after an
unload answering: test_real_engine_views.py). The first on-demand swap to the second name is
test_real_engine_views.py's (it watches the views during that load), so no engine start is
spent twice on it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import (
    COLD,
    HOT,
    Stack,
    record_figure,
    requests_after_shutdown,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PACE_S = 1.0  # each steady-load client's pause between its requests


def ask(stack: Stack, model: str = HOT) -> str:
    reply = stack.client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=30, temperature=0
    )
    return reply.choices[0].message.content or ""


def test_models_lists_both_names_with_states(stack: Stack) -> None:
    listed = {m.id: m for m in stack.client.models.list().data}
    assert {HOT, COLD} <= set(listed)
    assert listed[HOT].model_extra is not None and listed[HOT].model_extra["state"] == "ready"


def test_chat_answer_mentions_paris(stack: Stack) -> None:
    reply = stack.client.chat.completions.create(
        model=HOT, messages=QUESTION, max_tokens=30, temperature=0
    )
    assert reply.model == HOT
    assert "paris" in (reply.choices[0].message.content or "").lower()
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_streamed_chat_answer_mentions_paris(stack: Stack) -> None:
    stream = stack.client.chat.completions.create(
        model=HOT,
        messages=QUESTION,
        max_tokens=30,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(pieces) > 2, "streamed in several chunks"
    assert "paris" in "".join(pieces).lower()
    assert usage is not None and usage.completion_tokens > 0


def test_completions(stack: Stack) -> None:
    reply = stack.client.completions.create(
        model=HOT, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert reply.object == "text_completion"
    assert reply.choices[0].text.strip()
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


def test_usage_tokens_are_counted_in_gateway_metrics(stack: Stack) -> None:
    def tokens(kind: str) -> float:
        return stack.gateway.metric("orchestra_tokens_total", model=HOT, kind=kind)

    before = {k: tokens(k) for k in ("prompt", "completion")}
    reply = stack.client.chat.completions.create(model=HOT, messages=QUESTION, max_tokens=12)
    assert reply.usage is not None
    assert tokens("prompt") - before["prompt"] == reply.usage.prompt_tokens
    assert tokens("completion") - before["completion"] == reply.usage.completion_tokens


def test_unknown_model_is_404(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        stack.client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert caught.value.code == "model_not_found"


def test_engine_killed_with_sigkill_is_restarted(stack: Stack) -> None:
    engine = stack.model(HOT)["engines"][0]
    restarts, pid = engine["restarts"], engine["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: (
            stack.model(HOT)["engines"][0]["pid"] not in (pid, None)
            and stack.model(HOT)["state"] == "ready"
        ),
        timeout=420,
        interval=0.2,
        what="the killed engine restarted and READY",
    )
    assert stack.model(HOT)["engines"][0]["restarts"] == restarts + 1
    assert "paris" in ask(stack).lower()


def test_swaps_under_steady_load_fail_nothing_and_reach_no_stopping_engine(stack: Stack) -> None:
    """A client per name keeps asking (one resident slot) until the engines have swapped:
    every request succeeds, and the engines' own logs show no request served after their
    stop began (eviction drains the gateway's requests first). The clients stop asking once
    the first swap is done; a request of the evicted name already waiting brings it back (a
    second swap, the other way), and the test waits for it: each swap is a real engine start,
    so none is spent beyond those two."""
    swaps_before = stack.supervisor.metric("orchestra_supervisor_swaps_total")
    stop = threading.Event()
    answers: list[tuple[str, str]] = []
    errors: list[str] = []

    def client(model: str) -> None:
        while not stop.is_set():
            try:
                answers.append((model, ask(stack, model)))
            except openai.APIError as exc:
                errors.append(f"{model}: {exc!r}")
            # Steady, not saturating: an engine decoding back to back would take both cores
            # from the engine being started (and from the suite's other workers), stretching
            # each swap; a pause per client still keeps requests in flight through every drain.
            stop.wait(PACE_S)

    deadline = time.monotonic() + 600
    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(client, m) for m in (HOT, COLD)]
        wait_until(
            lambda: (
                stack.supervisor.metric("orchestra_supervisor_swaps_total") >= swaps_before + 1
                or time.monotonic() > deadline
            ),
            timeout=660,
            interval=1.0,
            what="a swap under load",
        )
        stop.set()
        for done in running:
            done.result()
    assert stack.supervisor.metric("orchestra_supervisor_swaps_total") >= swaps_before + 1
    assert not errors, errors[:3]
    assert {m for m, _ in answers} == {HOT, COLD}
    assert all("paris" in a.lower() for _, a in answers), answers[:3]
    late = requests_after_shutdown(stack.log_dir)
    record_figure("e2e_steady_swap_requests", len(answers))
    assert late == {}, f"requests reached an engine after its shutdown began: {late}"


def test_gateway_health_reports_engine_states(stack: Stack) -> None:
    """The gateway's /health says which name is ready as the supervisor does: the swaps before
    leave one of the two resident (whichever it is), the other not ready."""

    def ready_at_both() -> tuple[set[str], set[str]]:
        health = httpx.get(stack.gateway.url + "/health", timeout=5).json()["models"]
        gateway = {m for m in (HOT, COLD) if health[m] == "ready"}
        supervisor = {m for m in (HOT, COLD) if stack.model(m)["state"] == "ready"}
        return gateway, supervisor

    def agreed() -> bool:
        gateway, supervisor = ready_at_both()
        return gateway == supervisor and len(gateway) == 1

    wait_until(agreed, timeout=120, interval=0.2, what="/health agreeing: one name ready")
