"""A fake Ollama server speaking Ollama's native wire format (docs/api.md), run as a subprocess.

    python tests/fake_ollama.py --port P [--models llama3.2:1b ...]

Routes: GET /api/version {"version"}, GET /api/tags, POST /api/chat and /api/generate
(NDJSON when "stream" is true or absent: `done: false` lines, then a final `done: true` line with
`done_reason`, `prompt_eval_count`, `eval_count` and nanosecond durations; a whole object when
false), POST /api/embed {"embeddings"}. Unknown model: 404 {"error": "model ... not found"}.
Output: `options.num_predict` words "ol0 ol1 ..." (default 5), done_reason "length".
Faults (POST /fake/fault {"kind", "count"?}): none | 500 | error-mid-stream (an {"error"} line
after 2 lines) | hang-mid-stream | version-down (/api/version answers 500).
GET /fake/stats: requests by path and the last request bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

FAULTS = {"none", "500", "error-mid-stream", "hang-mid-stream", "version-down"}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeOllama:
    def __init__(self, models: list[str]) -> None:
        self.models = set(models)
        self.fault, self.fault_count = "none", None
        self.by_path: Counter[str] = Counter()
        self.bodies: deque[dict[str, Any]] = deque(maxlen=20)

    def take_fault(self) -> str:
        kind = self.fault
        if kind not in ("none", "version-down") and self.fault_count is not None:
            self.fault_count -= 1
            if self.fault_count <= 0:
                self.fault, self.fault_count = "none", None
        return kind

    @web.middleware
    async def track(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.by_path[request.path] += 1
        return await handler(request)

    async def version(self, request: web.Request) -> web.Response:
        if self.fault == "version-down":
            return web.json_response({"error": "unavailable"}, status=500)
        return web.json_response({"version": "0.6.2"})

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": m, "model": m} for m in sorted(self.models)]})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.bodies.append(body)
        model = body.get("model")
        if model not in self.models:
            msg = f'model "{model}" not found, try pulling it first'
            return web.json_response({"error": msg}, status=404)
        kind = self.take_fault()
        if kind == "500":
            return web.json_response({"error": "llama runner process has terminated"}, status=500)
        chat = request.path == "/api/chat"
        if chat:
            prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        else:
            prompt = str(body.get("prompt", ""))
        n = int((body.get("options") or {}).get("num_predict") or 5)
        words = [("" if i == 0 else " ") + f"ol{i}" for i in range(n)]
        final = {
            "model": model,
            "created_at": _now(),
            "done": True,
            "done_reason": "length",
            "total_duration": 5_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": len(prompt.split()),
            "prompt_eval_duration": 1_000_000,
            "eval_count": n,
            "eval_duration": 3_000_000,
        }

        def piece(text: str) -> dict[str, Any]:
            head = {"model": model, "created_at": _now()}
            if chat:
                return {**head, "message": {"role": "assistant", "content": text}, "done": False}
            return {**head, "response": text, "done": False}

        if body.get("stream", True) is False:
            text = "".join(words)
            whole = {**piece(text), **final}
            if not chat:
                whole["context"] = [1, 2, 3]
            return web.json_response(whole)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for i, word in enumerate(words):
            if i == 2 and kind == "error-mid-stream":
                await resp.write(orjson.dumps({"error": "an error was encountered"}) + b"\n")
                return resp
            if i == 2 and kind == "hang-mid-stream":
                await asyncio.Event().wait()
            await resp.write(orjson.dumps(piece(word)) + b"\n")
        last = {**piece(""), **final}
        await resp.write(orjson.dumps(last) + b"\n")
        return resp

    async def embed(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        inputs = body.get("input", "")
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        vectors = [[round(0.1 * (i + 1), 3)] * 4 for i in range(len(items))]
        return web.json_response(
            {
                "model": body.get("model"),
                "embeddings": vectors,
                "total_duration": 1_000_000,
                "load_duration": 100_000,
                "prompt_eval_count": sum(len(str(x).split()) for x in items),
            }
        )

    async def set_fault(self, request: web.Request) -> web.Response:
        b = await request.json()
        if b.get("kind") not in FAULTS:
            return web.json_response({"error": "unknown fault"}, status=400)
        self.fault, self.fault_count = b["kind"], b.get("count")
        return web.json_response({"kind": self.fault})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"by_path": dict(self.by_path), "bodies": list(self.bodies)})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.track])
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_post("/api/chat", self.generate)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/embed", self.embed)
        app.router.add_post("/fake/fault", self.set_fault)
        app.router.add_get("/fake/stats", self.stats)
        return app


async def _serve(port: int, models: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runner = web.AppRunner(FakeOllama(models).app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"fake ollama listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--models", nargs="+", default=["llama3.2:1b"])
    a = p.parse_args(argv)
    asyncio.run(_serve(a.port, a.models))
    return 0


class FakeOllamaProcess:
    """`with FakeOllamaProcess(port, models) as o:`: the fake as a subprocess, own session."""

    def __init__(self, port: int, models: list[str]) -> None:
        self.port, self.models = port, models
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, timeout: float = 15) -> FakeOllamaProcess:
        self._log = tempfile.NamedTemporaryFile(prefix="fake-ollama-", suffix=".log")
        cmd = [sys.executable, os.path.abspath(__file__), "--port", str(self.port), "--models"]
        self.proc = subprocess.Popen(
            [*cmd, *self.models], stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/api/tags", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake ollama did not start")
            time.sleep(0.05)

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def set_fault(self, kind: str, count: int | None = None) -> None:
        self._call("/fake/fault", {"kind": kind, "count": count})

    def stats(self) -> dict[str, Any]:
        return dict(self._call("/fake/stats"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> FakeOllamaProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
