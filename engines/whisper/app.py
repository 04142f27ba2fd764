"""The FastAPI app: OpenAI's audio endpoints, /v1/models, /health and /metrics.

The model loads in the lifespan (in a thread), so the port answers only once it is ready, as
vLLM's does. A transcription holds one of `max_concurrent` slots and runs in a worker thread:
the event loop, and with it /health and /metrics, stays free while the model works.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import errors
from .audio import SAMPLE_RATE, UnreadableAudio, decode
from .errors import ApiError
from .form import AudioRequest, parse, read_form
from .formats import render
from .metrics import CONTENT_TYPE, WhisperMetrics
from .settings import Settings
from .transcriber import Result, Stopped, Task, Transcriber, TranscriptionTimeout

log = logging.getLogger("orchestra.engines.whisper")

ENDPOINTS: dict[Task, str] = {"transcribe": "transcriptions", "translate": "translations"}


class Engine:
    """The app's state: the one model, its slots and its metrics (built by create_app)."""

    def __init__(self, settings: Settings, load: Callable[[Settings], Transcriber]) -> None:
        self.settings = settings
        self.load = load
        self.metrics = WhisperMetrics(settings.served_name)
        self.transcriber: Transcriber | None = None
        self.slots = asyncio.Semaphore(settings.max_concurrent)
        self.waiting = 0
        self.stop = threading.Event()  # set at shutdown: running transcriptions end early
        self.created = int(time.time())

    async def start(self) -> None:
        started = time.monotonic()
        self.transcriber = await asyncio.to_thread(self.load, self.settings)
        seconds = time.monotonic() - started
        self.metrics.model_load_seconds.set(seconds)
        log.info("model %s loaded in %.2f s", self.settings.model_dir, seconds)

    def authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if key is not None and request.headers.get("authorization") != f"Bearer {key}":
            raise ApiError(401, "a valid API key is required", code="invalid_api_key")

    async def audio(self, request: Request, task: Task) -> Response:
        """One transcription or translation request, counted by its HTTP status."""
        endpoint = ENDPOINTS[task]
        try:
            response = await self._audio(request, task, endpoint)
        except ApiError as e:
            response = e.response()
        except Exception as e:  # the model's failure: logged, never a traceback to the client
            log.error("%s %s failed", request.method, request.url.path, exc_info=e)
            response = _internal().response()
        self.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    async def _audio(self, request: Request, task: Task, endpoint: str) -> Response:
        self.authorize(request)
        if self.transcriber is None:
            raise ApiError(503, "the model is not loaded", "service_unavailable", "not_ready")
        form = await read_form(request, self.settings.max_upload_bytes)
        try:
            call = parse(form, task, self.settings.served_name, self.transcriber.languages)
            async with self._slot(endpoint):
                started = time.monotonic()
                result = await asyncio.to_thread(self._run, self.transcriber, call)
                self.metrics.processing_seconds.labels(endpoint).observe(time.monotonic() - started)
            self.metrics.audio_seconds.labels(endpoint).inc(result.duration)
            return render(result, call.response_format, task, call.options.word_timestamps)
        finally:
            await form.close()

    def _run(self, transcriber: Transcriber, call: AudioRequest) -> Result:
        """Worker thread: decode and transcribe, bounded by --request-timeout-s."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        try:
            samples = decode(call.upload.file, call.filename)
        except UnreadableAudio as e:
            raise errors.bad_request(str(e), "file", "invalid_audio") from e
        try:
            return transcriber.run(samples, call.options, deadline, self.stop)
        except TranscriptionTimeout as e:
            seconds = len(samples) / SAMPLE_RATE
            raise ApiError(
                504,
                f"transcribing {seconds:.1f} s of audio took over "
                f"{self.settings.request_timeout_s} s (--request-timeout-s)",
                "timeout_error",
                "timeout",
            ) from e
        except Stopped as e:
            raise _unavailable("the engine is shutting down") from e

    @asynccontextmanager
    async def _slot(self, endpoint: str) -> AsyncIterator[None]:
        """One of max_concurrent slots: 503 when max_waiting already wait, or after
        queue_timeout_s."""
        if self.slots.locked() and self.waiting >= self.settings.max_waiting:
            raise _unavailable(f"{self.waiting} requests are already waiting (--max-waiting)")
        self.waiting += 1
        self.metrics.waiting.set(self.waiting)
        queued = time.monotonic()
        try:
            await asyncio.wait_for(self.slots.acquire(), self.settings.queue_timeout_s)
        except TimeoutError as e:
            raise _unavailable(
                f"no transcription slot within {self.settings.queue_timeout_s} s "
                "(--queue-timeout-s)"
            ) from e
        finally:
            self.waiting -= 1
            self.metrics.waiting.set(self.waiting)
            self.metrics.queue_seconds.labels(endpoint).observe(time.monotonic() - queued)
        self.metrics.running.inc()
        try:
            yield
        finally:
            self.metrics.running.dec()
            self.slots.release()

    def models(self, request: Request) -> dict[str, Any]:
        self.authorize(request)
        card = {
            "id": self.settings.served_name,
            "object": "model",
            "created": self.created,
            "owned_by": "orchestra",
            "root": str(self.settings.model_dir),
        }
        return {"object": "list", "data": [card]}


def _internal() -> ApiError:
    return ApiError(
        500, "internal error in the whisper engine (see its log)", "server_error", "internal_error"
    )


def _unavailable(message: str) -> ApiError:
    return ApiError(503, message, "service_unavailable", "overloaded", headers={"Retry-After": "1"})


def create_app(settings: Settings, load: Callable[[Settings], Transcriber]) -> FastAPI:
    """The app for `settings`; `load` builds the model (WhisperTranscriber in server.py)."""
    engine = Engine(settings, load)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        yield
        engine.stop.set()

    app = FastAPI(title="orchestra whisper engine", lifespan=lifespan, docs_url=None)
    app.state.engine = engine
    app.add_exception_handler(ApiError, errors.handle)
    app.add_exception_handler(HTTPException, errors.not_found)
    app.add_exception_handler(Exception, _internal_error)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await engine.audio(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request) -> Response:
        return await engine.audio(request, "translate")

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        return JSONResponse(engine.models(request))

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if engine.transcriber is not None else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE)

    return app


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return ApiError(
        500, "internal error in the whisper engine", "server_error", "internal_error"
    ).response()
