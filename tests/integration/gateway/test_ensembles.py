"""Ensembles on a real gateway with fake engines that disagree, parsed by the OpenAI SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine, wait_until
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(60)

MESSAGES = [{"role": "user", "content": "Is the sky blue?"}]
REPLIES = {"m-a": "Yes.", "m-b": "yes", "m-c": "No"}
# A generous bound for a losing member's cancellation to reach its engine (a poll: it costs
# nothing when it is quick; 10 s failed once on a machine loaded ~10x its two cores).
CANCEL_S = 30.0


# The winner waits this long before its first byte, so the slow member has its request
# in hand before the race ends (it is cut in any case; this makes the cut observable).
HEAD_START_MS = 500


def assert_not_run_to_the_end(slow: FakeEngineProcess) -> None:
    """The losing member was cut: nothing of it is still running, and it completed nothing.
    The fake engine (aiohttp) cancels its handler when the gateway closes the connection, so
    this is quick; a member that ran on would stay active until its 10 s first token and then
    complete. On a saturated machine the member's process may not even have read the request
    before the gateway closed the connection (then it never counts it): both are a cut."""

    def settled() -> dict[str, int] | None:
        stats = slow.stats()
        return stats if stats["active"] == 0 else None

    stats = wait_until(settled, CANCEL_S, what="the slow member's request ended")
    assert stats["completed"] == 0, stats
    assert stats["cancelled"] <= 1, stats


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, FakeEngineProcess]]:
    started = {n: FakeEngineProcess("--reply", r, name=n).start() for n, r in REPLIES.items()}
    yield started
    for engine in started.values():
        engine.stop()


@pytest.fixture(scope="module")
def gateway(engines: dict[str, FakeEngineProcess]) -> Iterator[GatewayProcess]:
    members = list(REPLIES)
    config = {
        "gateway": fast_gateway_section(free_port(), retries={"max_attempts": 1}),
        "servers": [{"name": n, "url": e.url} for n, e in engines.items()],
        "aliases": {"c-alias": "m-c", "panel": "trio"},
        "ensembles": [
            {"name": "trio", "models": members},
            {"name": "hedge", "models": ["m-a", "m-c"], "strategy": "first"},
            {"name": "poll", "models": ["m-a", "m-b", "c-alias"], "strategy": "vote"},
            {"name": "split", "models": ["m-a", "m-c"], "strategy": "vote"},
            {"name": "short", "models": ["m-a", "m-c"], "timeout_s": 1},
        ],
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean(engines: dict[str, FakeEngineProcess], gateway: GatewayProcess) -> None:
    for engine in engines.values():
        reset_engine(engine)
        engine.configure(ttft_ms=0)  # a test's pacing must not leak into the next
    gateway.wait_ready(*REPLIES)


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0, timeout=20
    ) as sdk:
        yield sdk


def _extra(obj: Any) -> dict[str, Any]:
    return dict(obj.model_extra or {})


def test_all_answers_with_every_member(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="panel", messages=MESSAGES, max_tokens=5
    )
    reply = raw.parse()
    # the merged reply names every member's engine, in member order, and so does its report
    addresses = [engines[n].url.removeprefix("http://") for n in REPLIES]
    assert raw.headers["x-orchestra-replica"] == ",".join(addresses)
    assert reply.model == "trio"
    got = {_extra(c)["model"]: c.message.content for c in reply.choices}
    assert got == REPLIES
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 1 + 1 + 1
    assert reply.usage.prompt_tokens == 3 * 4
    members = _extra(reply)["orchestra"]["members"]
    assert [m["status"] for m in members] == [200, 200, 200]
    assert [m["replica"] for m in members] == addresses


def test_all_reports_a_failed_member(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    engines["m-b"].set_fault("500", count=1)
    reply = client.chat.completions.create(model="trio", messages=MESSAGES, max_tokens=5)
    assert [_extra(c)["model"] for c in reply.choices] == ["m-a", "m-c"]
    members = {m["model"]: m for m in _extra(reply)["orchestra"]["members"]}
    assert members["m-b"]["status"] == 500
    assert "Injected fault" in members["m-b"]["error"]["message"]


def test_all_fails_only_when_every_member_fails(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    for engine in engines.values():
        engine.set_fault("500", count=1)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="trio", messages=MESSAGES, max_tokens=5)
    assert caught.value.status_code == 500
    assert "every member of ensemble `trio` failed" in caught.value.message


def test_first_wins_and_the_slow_member_is_cancelled(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    engines["m-c"].configure(ttft_ms=10_000)
    engines["m-a"].configure(ttft_ms=HEAD_START_MS)
    raw = client.chat.completions.with_raw_response.create(
        model="hedge", messages=MESSAGES, max_tokens=5
    )
    assert raw.parse().choices[0].message.content == "Yes."
    assert raw.headers["x-orchestra-served-by"] == "m-a"
    assert_not_run_to_the_end(engines["m-c"])


def test_first_streaming_relays_the_winner(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    engines["m-a"].configure(ttft_ms=10_000)
    engines["m-c"].configure(ttft_ms=HEAD_START_MS)
    stream = client.chat.completions.create(
        model="hedge", messages=MESSAGES, max_tokens=5, stream=True
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {"m-c"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "No"
    assert_not_run_to_the_end(engines["m-a"])


def test_vote_takes_the_normalised_majority(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="poll", messages=MESSAGES, max_tokens=5)
    vote = _extra(reply)["orchestra"]["vote"]
    assert vote["winner"] == "yes"
    assert vote["tally"] == {"yes": 2, "no": 1}
    assert vote["tie"] is False
    assert len(reply.choices) == 1
    assert _extra(reply.choices[0])["model"] == "m-a"


def test_vote_reports_a_tie(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="split", messages=MESSAGES, max_tokens=5)
    vote = _extra(reply)["orchestra"]["vote"]
    assert vote["tie"] is True
    assert sorted(vote["tied"]) == ["no", "yes"]


def test_streaming_all_multiplexes_members_as_choices(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="trio",
        messages=MESSAGES,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    text: dict[int, str] = {}
    models: dict[int, str] = {}
    usage = None
    for chunk in stream:
        assert chunk.model == "trio"
        for choice in chunk.choices:
            text[choice.index] = text.get(choice.index, "") + (choice.delta.content or "")
            models[choice.index] = _extra(choice)["model"]
        usage = chunk.usage or usage
    assert {models[i]: text[i] for i in text} == REPLIES
    assert usage is not None
    assert usage.completion_tokens == 3


def test_streaming_all_reports_a_member_that_failed(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    engines["m-a"].set_fault("503", count=1)
    chunks = list(
        client.chat.completions.create(model="trio", messages=MESSAGES, max_tokens=5, stream=True)
    )
    errors = [_extra(c)["orchestra"] for c in chunks if "error" in _extra(c).get("orchestra", {})]
    assert [e["member"] for e in errors] == ["m-a"]
    assert {_extra(ch)["model"] for c in chunks for ch in c.choices} == {"m-b", "m-c"}


def test_timeout_cuts_a_member_off(
    client: openai.OpenAI, engines: dict[str, FakeEngineProcess]
) -> None:
    engines["m-c"].configure(ttft_ms=10_000)
    reply = client.chat.completions.create(model="short", messages=MESSAGES, max_tokens=5)
    members = {m["model"]: m for m in _extra(reply)["orchestra"]["members"]}
    assert members["m-c"]["status"] == 504
    assert members["m-c"]["error"]["code"] == "ensemble_timeout"
    wait_until(
        lambda: engines["m-c"].stats()["cancelled"] == 1, CANCEL_S, what="cut-off member cancelled"
    )


def test_completions_and_models_list(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    reply = client.completions.create(model="trio", prompt="Is it?", max_tokens=5)
    assert sorted(c.text for c in reply.choices) == sorted(REPLIES.values())
    cards = {c["id"]: c for c in httpx.get(gateway.url + "/v1/models").json()["data"]}
    assert cards["trio"]["members"] == list(REPLIES)
    assert cards["hedge"]["strategy"] == "first"


def test_ensembles_refuse_other_endpoints(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="trio", input="x")
