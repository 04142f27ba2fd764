"""prefix_aware and session policies: what they pick, their load gate, and their bounds."""

from __future__ import annotations

import collections

from orchestra.config import AffinityConfig
from orchestra.gateway.balancing.balancer import make_balancer
from orchestra.gateway.balancing.prefix import PrefixAware, block_chain, render_prompt
from orchestra.gateway.balancing.replica import Replica
from orchestra.gateway.balancing.session import MAX_RINGS, SessionAffinity
from orchestra.gateway.core.request_key import RequestKey
from orchestra.runtime import Bounded

SYSTEM = [f"You are assistant number {i}. " * 40 for i in range(8)]  # ~1 KiB each


def _replicas(n: int) -> list[Replica]:
    return [Replica(url=f"http://r{i}") for i in range(n)]


def _chat(system: str, *turns: str) -> RequestKey:
    messages = [{"role": "system", "content": system}]
    messages += [{"role": "user", "content": t} for t in turns]
    return RequestKey({"model": "m", "messages": messages})


def test_block_chain_is_chained_and_only_full_blocks() -> None:
    a = block_chain("x" * 300, 128)
    assert len(a) == 2  # 44 trailing characters are not a full block
    b = block_chain("y" * 128 + "x" * 172, 128)
    assert a[0] != b[0] and a[1] != b[1]  # the second block is equal, its prefix is not
    assert block_chain("x" * 256 + "z" * 10, 128) == a


def test_render_prompt_chat_parts_completions_and_limit() -> None:
    chat = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert render_prompt(chat, 100) == "user\nhi\n"
    assert render_prompt({"prompt": "abc" * 10}, 5) == "abcab"
    assert render_prompt({"prompt": ["first", "second"]}, 100) == "first"
    assert render_prompt({"prompt": [1, 2, 3]}, 100) == "1 2 3"
    assert render_prompt({"input": "x"}, 100) == ""


def test_same_system_prompt_sticks_to_one_replica_and_prompts_spread() -> None:
    replicas = _replicas(2)
    policy = PrefixAware(AffinityConfig())
    homes = {}
    for i, system in enumerate(SYSTEM):
        homes[i] = policy.pick(replicas, _chat(system, "first question"))
    assert set(homes.values()) == set(replicas)  # new prefixes go to the least loaded: spread
    for turn in range(20):
        for i, system in enumerate(SYSTEM):
            assert policy.pick(replicas, _chat(system, f"question {turn}")) is homes[i]


def test_longest_match_wins_over_a_shorter_one() -> None:
    a, b = _replicas(2)
    policy = PrefixAware(AffinityConfig())
    history = ["turn one " * 30, "turn two " * 30]
    assert policy.pick([a], _chat(SYSTEM[0])) is a  # only the system prompt on a
    assert policy.pick([b], _chat(SYSTEM[0], *history)) is b  # system + history on b
    assert policy.pick([a, b], _chat(SYSTEM[0], *history, "turn three")) is b
    a.outstanding = 1  # equal match lengths: the less loaded one
    assert policy.pick([a, b], _chat(SYSTEM[0])) is b


def test_load_gate_sends_to_least_loaded_when_the_match_is_overloaded() -> None:
    a, b = _replicas(2)
    policy = PrefixAware(AffinityConfig(load_gate=4))
    key = _chat(SYSTEM[1], "q")
    assert policy.pick([a], key) is a
    a.outstanding, b.load = 4, 0
    assert policy.pick([a, b], key) is a  # 4 more than b: within the gate
    a.load = 1
    assert policy.pick([a, b], key) is b  # 5 more: overloaded, least loaded instead
    a.outstanding = a.load = 0
    assert policy.pick([a, b], key) in (a, b)  # now both hold it; either is right


def test_table_is_bounded_and_drops_chains_from_the_tail() -> None:
    policy = PrefixAware(AffinityConfig(table_size=16, max_blocks=8))
    replicas = _replicas(2)
    for i in range(100):
        policy.pick(replicas, _chat(f"prompt {i} " * 200))
        assert len(policy) <= 16
    assert policy.bounded() == Bounded(16, 16)  # what GET /admin/runtime reports
    last = block_chain(render_prompt(_chat("prompt 99 " * 200).payload, 8 * 128), 128)
    owner = next(r.url for r in replicas if policy.match_length(last, r.url))
    assert policy.match_length(last, owner) == 8  # the newest chain is whole


def test_no_prompt_goes_to_least_loaded() -> None:
    a, b = _replicas(2)
    a.outstanding = 3
    policy = make_balancer("prefix_aware")
    assert policy.pick([a, b], RequestKey({"input": "embed me"})) is b


def _session(value: str) -> RequestKey:
    return RequestKey({"model": "m"}, [(b"x-session-id", value.encode())])


def test_session_header_then_user_then_least_loaded() -> None:
    replicas = _replicas(3)
    policy = SessionAffinity(AffinityConfig())
    for s in range(50):
        first = policy.pick(replicas, _session(f"s{s}"))
        replicas[s % 3].outstanding += 5  # load does not move a session
        assert all(policy.pick(replicas, _session(f"s{s}")) is first for _ in range(5))
    by_user = RequestKey({"user": "alice"})
    home = policy.pick(replicas, by_user)
    assert all(policy.pick(replicas, by_user) is home for _ in range(5))
    for r in replicas:
        r.outstanding = 0
    replicas[0].outstanding = replicas[1].outstanding = 2
    assert policy.pick(replicas, RequestKey({})) is replicas[2]


def test_session_header_name_is_configurable() -> None:
    policy = SessionAffinity(AffinityConfig(session_header="X-Conversation"))
    key = RequestKey({}, [(b"x-conversation", b"c1")])
    assert policy.session_of(key) == "c1"
    assert policy.session_of(_session("other")) is None


def test_a_replica_leaving_moves_only_its_own_sessions() -> None:
    replicas = _replicas(4)
    policy = SessionAffinity(AffinityConfig())
    sessions = [f"session-{i}" for i in range(2000)]
    before = {s: policy.pick(replicas, _session(s)) for s in sessions}
    spread = collections.Counter(before.values())
    assert min(spread.values()) > 2000 / 4 * 0.7  # virtual nodes keep the split fair
    gone = replicas[1]
    remaining = [r for r in replicas if r is not gone]
    after = {s: policy.pick(remaining, _session(s)) for s in sessions}
    moved = [s for s in sessions if after[s] is not before[s]]
    assert moved and all(before[s] is gone for s in moved)
    back = {s: policy.pick(replicas, _session(s)) for s in sessions}
    assert back == before  # and they return when it does
    assert policy.bounded() == Bounded(2, MAX_RINGS)  # two rotations; sessions are not kept


def test_rings_stay_within_their_cap_however_many_rotations() -> None:
    replicas = _replicas(MAX_RINGS + 20)
    policy = SessionAffinity(AffinityConfig())
    for i in range(len(replicas) - 1):
        policy.pick(replicas[i : i + 2], _session(f"s{i}"))
        assert policy.bounded().within
    assert policy.bounded().size < MAX_RINGS
