"""A Ray node lost under live streams (the two-node cluster of `ray_nodes.py`, `orchestra ray
up` putting a supervisor and a fake engine of `both` on each node, a gateway that knows only
`ray:`).

"Node lost" here is the machine vanishing: its link is cut (`Node.cut`: the node's end of the
veth down), so nothing it runs is heard again — no FIN, no RST, its raylet misses Ray's health
checks, its supervisor stops answering, its engines' streams fall silent. (Killing its
processes instead would be the easy case: on one kernel every socket gets an RST at once.)

With 16 chat streams in flight, half on each node: every stream on the lost node ends with an
error event (`data: {"error": ...}`) within min(the relay's idle timeout, Ray's death notice)
plus scheduling slack; every stream on the other node completes whole; requests sent during
and after the loss are all served, and once the gateway has Ray's notice none goes to the lost
node; every client returns within its bound. The figures are printed (`-s`) and kept in
docs/design.md.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import GatewayProcess

from .cluster import Load, Sent, admin_status, replica_urls
from .ray_nodes import RayNodes, gateway_config, logged_at, up_config, wait_gateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STREAMS = 16
TOKEN_RATE = 20.0  # tokens/s per stream (the fake engine's pacing)
MAX_TOKENS = 160  # ~8 s per stream: all live at the cut, the survivors still live at the notice
# The relay's idle timeout (and first-byte bound), set above Ray's death notice here (~2-3 s,
# `HEALTH` in ray_nodes.py) so that the notice is what ends the lost node's streams.
IDLE_S = 12.0
NOTICE_S = 10.0  # bound on Ray's notice reaching the gateway on a busy 2-core machine
SLACK_S = 2.0  # a busy machine's scheduling, between an event and the client seeing it


class ChatStream(threading.Thread):
    """One streamed chat completion through the gateway, read to its end on its own thread."""

    def __init__(self, gw_url: str) -> None:
        super().__init__(daemon=True)
        self.url = gw_url + "/v1/chat/completions"
        self.replica = ""  # host:port of the engine that serves it
        self.data: list[str] = []  # the `data:` of every event, in order
        self.failure = ""  # the client's own error (a dropped connection), if any
        self.ended = 0.0  # monotonic time the client's read returned

    def run(self) -> None:
        body = {
            "model": "both",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": MAX_TOKENS,
            "stream": True,
        }
        try:  # the client's own timeout is far above every bound: the gateway must end it
            with httpx.stream("POST", self.url, json=body, timeout=60) as reply:
                self.replica = reply.headers.get("x-orchestra-replica", "")
                for line in reply.iter_lines():
                    if line.startswith("data: "):
                        self.data.append(line.removeprefix("data: "))
        except httpx.HTTPError as exc:
            self.failure = repr(exc)
        finally:
            self.ended = time.monotonic()

    def tokens(self) -> int:
        words = 0
        for data in list(self.data):
            if data != "[DONE]":
                for choice in json.loads(data).get("choices", []):
                    words += len((choice.get("delta", {}).get("content") or "").split())
        return words

    def error(self) -> dict[str, object] | None:
        last = json.loads(self.data[-1]) if self.data and self.data[-1] != "[DONE]" else {}
        error = last.get("error")
        return error if isinstance(error, dict) else None


def test_a_node_lost_under_live_streams(ray_cluster: RayNodes, tmp_path: Path) -> None:
    nodes = ray_cluster
    path = tmp_path / "ray-up.yaml"
    path.write_text(yaml.safe_dump(up_config(tmp_path, ("--token-rate", str(TOKEN_RATE)))))
    assert "2 started" in nodes.orchestra("up", path).stdout
    timeouts = {"idle_read_s": IDLE_S, "first_byte_s": IDLE_S}
    config = gateway_config(nodes, timeouts=timeouts)
    with GatewayProcess(config, env=nodes.env).start(timeout=60) as gw:
        wait_gateway(gw, lambda: len(replica_urls(gw, "both")) == 2, 60, "both on two nodes")
        (head_url,) = [u for u in replica_urls(gw, "both") if nodes.head_address in u]
        streams = [ChatStream(gw.url) for _ in range(STREAMS)]
        for stream in streams:
            stream.start()
        wait_gateway(gw, lambda: all(s.tokens() >= 2 for s in streams), 30, "16 live streams")
        lost = [s for s in streams if s.replica.startswith(nodes.worker.address + ":")]
        kept = [s for s in streams if s not in lost]
        assert len(lost) >= STREAMS // 4 and len(kept) >= STREAMS // 4, [s.replica for s in streams]

        with Load(gw.url, "both") as load, Load(gw.url, "both") as load2:
            wait_gateway(gw, lambda: load.ok("both") + load2.ok("both") >= 4, 30, "load")
            cut, cut_wall = time.monotonic(), time.time()
            nodes.worker.cut()
            try:
                rotation, notice = _notices(gw, f"ray-{nodes.worker.address}", head_url)
                # When the gateway removed the node, from its log (polling its status lags)
                removed = logged_at(gw.output(), "left the Ray cluster")
                if removed is not None:
                    notice = min(notice, cut + removed - cut_wall)
                bound = min(IDLE_S, notice - cut) + SLACK_S
                for stream in lost:
                    stream.join(max(0.0, cut + bound - time.monotonic()))
                hung = [s.replica for s in lost if s.is_alive()]
                declared = nodes.node_declared_dead()
                wait_gateway(
                    gw,
                    lambda: len(_sent_after(rotation, load, load2)) >= 10,
                    30,
                    "load after the lost node left rotation",
                )
            finally:
                nodes.worker.restore()
        for stream in kept:
            stream.join(MAX_TOKENS / TOKEN_RATE + 30)

    # Nothing hangs: every client on the lost node returned within the bound...
    assert not hung, f"{len(hung)} streams still open {bound:.1f} s after the cut"
    assert not any(s.is_alive() for s in kept)
    # ...with an error event in the chat dialect, after what had come (no [DONE]).
    for stream in lost:
        assert not stream.failure and stream.error() is not None, (stream.failure, stream.data[-2:])
        assert stream.tokens() < MAX_TOKENS
    # The other node's streams were not disturbed: whole, and ended by [DONE].
    for stream in kept:
        assert not stream.failure and stream.data[-1] == "[DONE]", stream.data[-2:]
        assert stream.tokens() == MAX_TOKENS
    # No request failed (those in flight to the lost node were retried on the other); once the
    # lost node was out of rotation none went to it.
    assert load.failed() + load2.failed() == 0, (load.statuses, load2.statuses, load.errors[:3])
    head_address = head_url.removeprefix("http://")
    assert {r.replica for r in _sent_after(rotation, load, load2)} == {head_address}

    to_error = sorted(s.ended - cut for s in lost)
    at_cut = [r.done - cut for r in load.sent + load2.sent if r.sent <= cut < r.done]
    during = [r.done - r.sent for r in _sent_after(cut, load, load2) if r.sent <= rotation]
    later = [r.done - r.sent for r in _sent_after(rotation, load, load2)]
    before = [r.done - r.sent for r in load.sent + load2.sent if r.done <= cut]
    first_served = min(r.done for r in _sent_after(cut, load, load2)) - cut
    print(
        f"\nnode lost (link cut): {len(lost)} of {STREAMS} streams on it, {len(kept)} on the "
        f"other node; relay idle timeout {IDLE_S:g} s\n"
        f"out of rotation {rotation - cut:.2f} s after the cut (supervisor silent, engines "
        f"probed); Ray declared it dead at {_since(cut_wall, declared)} (its GCS log), "
        f"the gateway had the notice (node removed) at {notice - cut:.2f} s\n"
        f"time to error per lost stream: min {to_error[0]:.2f} s, "
        f"median {statistics.median(to_error):.2f} s, max {to_error[-1]:.2f} s\n"
        f"requests in flight at the cut: {len(at_cut)}, answered by "
        f"{max(at_cut, default=0):.2f} s; first request sent after the cut served at "
        f"{first_served:.2f} s; {len(during)} sent before it left rotation (latency max "
        f"{max(during, default=0):.2f} s), {len(later)} after (latency median "
        f"{statistics.median(later):.3f} s, max {max(later):.3f} s; before the cut median "
        f"{statistics.median(before):.3f} s); none failed"
    )
    print(f"error event: {lost[0].data[-1]}")


def _notices(gw: GatewayProcess, node: str, survivor: str) -> tuple[float, float]:
    """When the lost node's engine left rotation (the link's own watch of a silent supervisor,
    or Ray's notice) and when Ray's death notice removed the node (monotonic times)."""
    rotation = notice = 0.0

    def both() -> bool:
        nonlocal rotation, notice
        status = admin_status(gw)
        now = time.monotonic()
        urls = [r["url"] for r in status["models"]["both"]["replicas"]]
        rotation = rotation or (now if urls == [survivor] else 0.0)
        notice = notice or (now if node not in status["nodes"] else 0.0)
        return bool(rotation and notice)

    wait_gateway(gw, both, NOTICE_S, "the lost node out of rotation and removed")
    return rotation, notice


def _since(start: float, moment: float | None) -> str:
    return "?" if moment is None else f"{moment - start:.2f} s"


def _sent_after(since: float, *loads: Load) -> list[Sent]:
    return [r for load in loads for r in load.sent if r.sent > since]
