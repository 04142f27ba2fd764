"""The batch runner: the one owner of running batches.

One loop (`run`) looks at the store every `poll_s` and moves each active batch along:
validating -> in_progress (or failed) -> finalizing -> completed; cancelling -> cancelled;
past `expires_at` -> expired. An in-progress batch has one worker task that sends its pending
rows through the gateway, paced per model by `Pacer`; each row's result is committed the moment
it arrives. Everything the loop knows is in the store, so a restarted gateway picks every batch
up where the store says it is: rows with a result never run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from orchestra.config import BatchConfig
from orchestra.tracing import Tracing

from .concurrency import ModelLimit, Pacer, acquire_unless
from .send import Send
from .shapes import error_line, file_object, now, response_line
from .store import Row, Store
from .validation import validate

log = logging.getLogger(__name__)

# 429/503 cut the pacer; only a 429 (no room, no engine reached) is sent again: a 503 is the
# pipeline's verdict after its retries and chain, final (docs/design.md, "Retries").
_NO_ROOM, _SEND_AGAIN = frozenset({429, 503}), frozenset({429})
_CLOSE = {
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "cancelled": ("batch_cancelled", "The batch was cancelled before this request ran."),
}


class BatchRunner:
    def __init__(
        self,
        store: Store,
        send: Send,
        pacer: Pacer,
        config: BatchConfig,
        known: Callable[[str], bool],  # a `model` the pipeline serves (names resolved)
        tracing: Tracing | None = None,  # one trace per batch, a span per row (`send.py`)
    ) -> None:
        self.store = store
        self._tracing = tracing or Tracing(None)
        self._send = send
        self._pacer = pacer
        self._config = config
        self._known = known
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._halt: dict[str, tuple[asyncio.Event, float]] = {}  # batch -> (event, grace)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the store now (a batch was created or cancelled)."""
        self._wake.set()

    async def run(self) -> None:
        next_poll = 0.0
        while True:
            await self.tick()
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self._config.gauge_poll_s
                await self._pacer.poll()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.poll_s):
                    await self._wake.wait()
            self._wake.clear()

    async def stop(self) -> None:
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()

    async def tick(self) -> None:
        for batch in await self.store.active_batches():
            bid, status = batch["id"], batch["status"]
            worker = self._workers.get(bid)
            alive = worker is not None and not worker.done()
            if status == "validating":
                await self._validate(batch)
            elif status == "in_progress" and now() >= batch["expires_at"]:
                if alive:
                    self._stop_worker(bid, grace=0.0)
                else:
                    await self._finalize(batch, "expired")
            elif status == "in_progress" and not alive:
                self._start_worker(batch)
            elif status == "cancelling":
                if alive:
                    self._stop_worker(bid, grace=self._config.cancel_grace_s)
                else:
                    await self._finalize(batch, "cancelled")
            elif status == "finalizing":
                await self._finalize(batch, "completed")

    # ---- states ----------------------------------------------------------------------------
    async def _validate(self, batch: dict[str, Any]) -> None:
        bid = batch["id"]
        path = self.store.path(batch["input_file_id"])
        try:
            content = await asyncio.to_thread(path.read_bytes)
        except OSError:
            errors = {
                "object": "list",
                "data": [
                    {
                        "code": "file_not_found",
                        "message": "The input file is gone.",
                        "param": "input_file_id",
                        "line": None,
                    }
                ],
            }
            await self.store.update_batch(
                bid, ("validating",), status="failed", failed_at=now(), errors=errors
            )
            return
        checked = await asyncio.to_thread(
            validate,
            content,
            batch["endpoint"],
            self._known,
            self._config.max_rows,
        )
        if checked.error_count:
            await self.store.update_batch(
                bid,
                ("validating",),
                status="failed",
                failed_at=now(),
                errors=checked.error_object(),
            )
            return
        await self.store.add_rows(bid, checked.rows)
        models = {r.model for r in checked.rows}
        await self.store.update_batch(
            bid,
            ("validating",),
            status="in_progress",
            in_progress_at=now(),
            model=models.pop() if len(models) == 1 else None,
        )

    async def _finalize(self, batch: dict[str, Any], final: str) -> None:
        bid = batch["id"]
        self._workers.pop(bid, None)
        self._halt.pop(bid, None)
        if final in _CLOSE:
            await self.store.close_pending(bid, *_CLOSE[final])
        elif await self.store.pending_rows(bid):
            # Finalizing with rows left (cannot happen by design): run them instead.
            await self.store.update_batch(bid, ("finalizing",), status="in_progress")
            return
        ids: dict[str, str | None] = {}
        suffix = bid.removeprefix("batch_")
        for ok, key, name in (
            (True, "output_file_id", "output"),
            (False, "error_file_id", "error"),
        ):
            content = await self.store.results(bid, ok)
            # Deterministic ids: finalizing again after a crash replaces, never duplicates.
            file_id = f"file-{suffix}-{name}" if content else None
            if file_id is not None:
                obj = file_object(
                    file_id, f"{bid}_{name}.jsonl", "batch_output", len(content), now()
                )
                await self.store.add_file(obj, content)
            ids[key] = file_id
        await self.store.update_batch(
            bid, (batch["status"],), status=final, **{f"{final}_at": now()}, **ids
        )
        log.info("batch %s %s", bid, final)

    # ---- the worker ------------------------------------------------------------------------
    def _start_worker(self, batch: dict[str, Any]) -> None:
        bid = batch["id"]
        halt = asyncio.Event()
        self._halt[bid] = (halt, 0.0)
        task = asyncio.create_task(self._traced(batch, halt), name=f"batch-{bid}")
        task.add_done_callback(self._worker_done)
        self._workers[bid] = task

    def _stop_worker(self, bid: str, grace: float) -> None:
        halt, _ = self._halt[bid]
        if not halt.is_set():
            self._halt[bid] = (halt, grace)
            halt.set()

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("batch worker %s failed", task.get_name(), exc_info=task.exception())
        self.wake()

    async def _traced(self, batch: dict[str, Any], halt: asyncio.Event) -> None:
        """The batch's work as one trace: its rows' tasks copy this span's context."""
        with self._tracing.span("batch") as span:
            span.set_attribute("orchestra.batch_id", batch["id"])
            await self._work(batch, halt)

    async def _work(self, batch: dict[str, Any], halt: asyncio.Event) -> None:
        bid = batch["id"]
        running: set[asyncio.Task[None]] = set()
        started: list[asyncio.Task[None]] = []
        owner = await self.store.owner(bid)  # the key the rows are charged to
        for row in await self.store.pending_rows(bid):
            limit = self._pacer.limit(row.model)
            if not await acquire_unless(limit, halt):
                break
            task = asyncio.create_task(self._row(batch, row, limit, owner))
            running.add(task)
            started.append(task)
            task.add_done_callback(running.discard)
        halted = asyncio.create_task(halt.wait())
        try:
            while running and not halt.is_set():  # the last rows, unless cancelled or expired
                await asyncio.wait({*running, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
        if halt.is_set():
            grace = self._halt[bid][1]
            if running and grace > 0:
                await asyncio.wait(set(running), timeout=grace)
            for task in running:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)
            return
        await asyncio.gather(*started)
        await self.store.update_batch(
            bid, ("in_progress",), status="finalizing", finalizing_at=now()
        )

    async def _row(
        self, batch: dict[str, Any], row: Row, limit: ModelLimit, owner: str | None
    ) -> None:
        try:
            status, body, request_id = await self._attempts(batch, row, limit, owner)
        except Exception as exc:  # a bug must not make a row run forever: it ends as an error
            log.exception("batch %s line %d failed in the gateway", batch["id"], row.line)
            failure = error_line(row.custom_id, "internal_error", f"gateway error: {exc!r}")
            await self.store.record(batch["id"], row.line, False, failure, (0, 0))
            return
        finally:
            await limit.release()
        try:
            reply: object = orjson.loads(body)
        except orjson.JSONDecodeError:
            reply = body.decode("utf-8", "replace")
        usage = reply.get("usage") if isinstance(reply, dict) else None
        tokens = (0, 0)
        if isinstance(usage, dict):
            tokens = (
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
            )
        line = response_line(row.custom_id, status, request_id, reply)
        await self.store.record(batch["id"], row.line, 200 <= status < 300, line, tokens)

    async def _attempts(
        self, batch: dict[str, Any], row: Row, limit: ModelLimit, owner: str | None
    ) -> tuple[int, bytes, str]:
        attempts = self._config.row_attempts
        for attempt in range(attempts):
            request_id = f"{batch['id']}-L{row.line}-a{attempt}"
            status, body = await self._send(
                batch["endpoint"], row.body, row.model, request_id, owner
            )
            if status == 429 and budget_exceeded(body):
                break  # a spent budget is not room to wait for: the row stops there
            if status in _NO_ROOM:
                await limit.refused()
            if status not in _SEND_AGAIN or attempt + 1 == attempts:
                break
            await asyncio.sleep(self._config.row_backoff_s * (attempt + 1))
        if 200 <= status < 300:
            await limit.succeeded()
        return status, body, request_id


def budget_exceeded(body: bytes) -> bool:
    """A 429 for the submitting key's spent budget (`protection/budgets.py`)."""
    return b'"budget_exceeded"' in body
