"""The audit trail under load and when the gateway dies: the bench's c=64 non-streamed traffic
(wrk, `bench/load.py`) leaves a line for every request the engine served, two workers write
whole lines through rotations, and a `kill -9` loses only lines of the last `flush_s`.

Figures are printed (`pytest -s`); the machine is shared, so they move with its load."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.load import chat_body, have_wrk, run_wrk
from orchestra.gateway.audit.read import files
from tests.conftest import wait_until
from tests.fake_engine import FakeEngineProcess

from .helpers import gateway, lines

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

CHAT = "/v1/chat/completions"
BODY = chat_body("m", 1, False)


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess("--served-model-name", "m", name="m") as e:
        yield e


def _served(engine: FakeEngineProcess) -> int:
    return int(engine.stats()["by_path"].get(CHAT, 0))


@pytest.mark.skipif(not have_wrk(), reason="wrk is not installed")
def test_c64_every_request_the_engine_served_has_its_line(
    engine: FakeEngineProcess, tmp_path: Path
) -> None:
    trail = tmp_path / "audit.jsonl"
    before = _served(engine)
    with gateway(engine, trail, keys=False) as gw:
        result = run_wrk(gw.url + CHAT, BODY, 64, 5.0)
        dropped = gw.metric("orchestra_audit_dropped_total")
    served = _served(engine) - before
    records = [r for r in lines(trail) if r["kind"] == "request"]
    ok = sum(r["status"] == 200 for r in records)
    cut = sum(r["status"] == 499 for r in records)  # in flight when wrk stopped
    print(
        f"\nc=64 for 5 s: wrk completed {result.requests} ({result.requests / 5:.0f}/s, "
        f"{result.errors} errors); engine served {served}; audit lines {len(records)} "
        f"({ok} x 200, {cut} x 499); dropped {dropped:.0f}; load {os.getloadavg()[0]:.1f}"
    )
    assert result.requests > 0 and dropped == 0
    assert len(records) == served  # one line per request that reached the engine, none twice
    assert len({r["request_id"] for r in records}) == served
    assert ok + cut == served
    assert result.requests <= ok <= result.requests + 64  # wrk stops reading at its end


@pytest.mark.skipif(not have_wrk(), reason="wrk is not installed")
def test_two_workers_write_whole_lines_through_rotations(
    engine: FakeEngineProcess, tmp_path: Path
) -> None:
    trail = tmp_path / "audit.jsonl"
    before = _served(engine)
    audit = {"max_bytes": 128 * 1024, "keep": 1000}
    with gateway(engine, trail, audit, keys=False, workers=2) as gw:
        gw.wait_workers(2)
        result = run_wrk(gw.url + CHAT, BODY, 32, 4.0)
        dropped = gw.metric("orchestra_audit_dropped_total")
    served = _served(engine) - before
    records = lines(trail)  # every line whole JSON, ending in its newline
    kept = files(trail)
    sizes = [p.stat().st_size for p in kept]
    workers = {r["request_id"][:16] for r in records}  # a per-process prefix
    print(
        f"\n2 workers, c=32 for 4 s: wrk completed {result.requests}; engine served {served}; "
        f"audit lines {len(records)} in {len(kept)} files (largest {max(sizes)} bytes); "
        f"dropped {dropped:.0f}; load {os.getloadavg()[0]:.1f}"
    )
    assert dropped == 0 and len(workers) == 2
    assert len(records) == served == len({r["request_id"] for r in records})
    assert len(kept) > 3 and max(sizes) <= 128 * 1024


def _cut(load: _Load, killed: float) -> set[str]:
    """Answers whose line the gateway wrote in its last moment, read by the client after the
    kill."""
    return load.sent_after(killed)


class _Load:
    """Clients sending completions one after another until stopped; each answer's request id
    and the time it was read."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.answered: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop) for _ in range(clients)]

    def _loop(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    reply = client.post(self.url + CHAT, content=BODY)
                except httpx.HTTPError:
                    continue  # the gateway is gone
                if reply.status_code == 200:
                    self.answered.append((reply.headers["x-request-id"], time.monotonic()))

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def sent_after(self, when: float) -> set[str]:
        return {rid for rid, at in self.answered if at > when}

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_kill_9_loses_at_most_the_last_flush(engine: FakeEngineProcess, tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"
    flush_s = 0.5  # the default
    gw = gateway(engine, trail, {"flush_s": flush_s}, keys=False)
    with gw, _Load(gw.url, 8) as load:
        started = time.monotonic()
        wait_until(
            lambda: time.monotonic() - started > 3 and len(load.answered) > 100,
            timeout=60,
            what="3 s of answers",
        )
        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        gw.proc.wait(timeout=10)
    answered = {rid: at for rid, at in load.answered if at <= killed}
    audited = {r["request_id"] for r in lines(trail)}
    missing = sorted(killed - at for rid, at in answered.items() if rid not in audited)
    oldest = max(missing, default=0.0)
    last_second = sum(killed - at < 1.0 for at in answered.values())
    print(
        f"\nkill -9 after 3 s of 8 clients: {len(answered)} answered, {last_second} of them in "
        f"the last second; {len(missing)} without a line, answered at most {oldest:.3f} s "
        f"before the kill (flush_s {flush_s}); {len(audited)} lines; load {os.getloadavg()[0]:.1f}"
    )
    assert len(audited) > 0 and audited <= set(answered) | _cut(load, killed)
    # Lost: only lines still queued, i.e. answered since the writer's last write began.
    assert oldest < 1.0
