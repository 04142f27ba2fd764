"""Shapers: a model call's HTTP request read into a pipeline call (`core/call.py`).

`json`: the body limit, one JSON object, a string `model`. `multipart`: an upload spooled
(memory up to `gateway.uploads.spool_bytes`, then a temporary file), refused with 413 past
`gateway.uploads.max_bytes`, its form's `model` routed like any (re-sent unchanged, except for
the `model` value when an alias or a chain sends it to another model).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

from orchestra.config import GatewayConfig

from ..core.call import Call, new_call
from ..core.errors import BadRequest, PayloadTooLarge
from ..core.traits import PLAIN, Traits
from .multipart import SpooledBody, Upload, read_upload

_JSON = "application/json"  # what a JSON call is sent upstream as, whatever the client said


@dataclass(slots=True)
class Incoming:
    """A model call's HTTP request as the edge holds it (no Starlette `Request`: its
    lazy header and state objects cost more than the few lookups the shapers make)."""

    scope: Scope
    receive: Receive
    headers: dict[bytes, bytes]  # `auth.first_headers(scope)`: lowercase name -> first value
    traits: Traits = PLAIN  # its route's (`RouteSpec.traits`), copied into the call

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    async def stream(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; ClientDisconnect when the client leaves first."""
        more = True
        while more:
            chunk, more = _body_part(await self.receive())
            if chunk:
                yield chunk

    async def body(self, limit: int) -> bytes:
        """The whole body, at most `limit` bytes (PayloadTooLarge past it); ClientDisconnect
        when the client leaves first. A loop of its own, not over `stream`: an async generator
        per request costs its creation, the loop's first-iteration hook and a close."""
        declared = self.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            chunk, more = _body_part(await self.receive())
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one chunk: no copy


def _body_part(message: Message) -> tuple[bytes, bool]:
    """One request message's body bytes and whether more follow; ClientDisconnect when it says
    the client left."""
    if message["type"] == "http.disconnect":
        raise ClientDisconnect
    return message.get("body", b""), message.get("more_body", False)


@dataclass(slots=True)
class Shaped:
    call: Call
    upload: Upload | None = None  # closed once the pipeline has answered (it read the body)

    def close(self) -> None:
        if self.upload is not None:
            self.upload.close()


class Shapers:
    def __init__(
        self, config: GatewayConfig, known: Callable[[str], bool], priority_header: str
    ) -> None:
        self._config = config
        self._known = known  # a configured model name (the only metrics labels)
        self._priority_header = priority_header.lower().encode("latin-1")  # ASGI names

    async def json(self, request: Incoming) -> Shaped:
        arrived = time.perf_counter()
        payload, body = await _read_json_object(request, self._config.max_body_bytes)
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a `model` (a string)", param="model")
        stream = payload.get("stream") is True
        call = self._call(request, body, payload, model, stream, len(body), arrived, _JSON)
        return Shaped(call)

    async def multipart(self, request: Incoming) -> Shaped:
        arrived = time.perf_counter()
        limits = self._config.uploads
        upload = await read_upload(
            request.stream(),
            request.header(b"content-type") or "",
            request.header(b"content-length"),
            limits.max_bytes,
            limits.spool_bytes,
        )
        try:
            model = upload.fields.get("model")
            if not model:
                raise BadRequest("you must provide a `model` form field", param="model")
            if "file" not in upload.files:
                raise BadRequest("you must provide a `file` form field (the audio)", param="file")
            stream = upload.fields.get("stream", "").lower() == "true"
            body = SpooledBody(upload)
            content_type = request.header(b"content-type") or ""  # with the boundary
            payload = {"model": model}
            call = self._call(
                request, body, payload, model, stream, upload.size, arrived, content_type
            )
        except BaseException:
            upload.close()
            raise
        return Shaped(call, upload)

    def _call(
        self,
        request: Incoming,
        body: bytes | SpooledBody,
        payload: dict[str, Any],
        model: str,
        stream: bool,
        size: int,
        arrived: float,
        content_type: str,
    ) -> Call:
        state = request.scope["state"]  # with the request id and API key (edge/calls.py)
        if self._known(model):
            state["model"] = model  # the metrics label: a configured name, never a client string
        return new_call(
            request.scope["path"],
            body,
            payload,
            model,
            request_id=state["request_id"],
            stream=stream,
            content_type=content_type,
            authorization=request.header(b"authorization"),
            api_key=state.get("api_key"),
            priority=request.header(self._priority_header),
            body_size=size,
            raw_headers=request.scope["headers"],
            arrived=arrived,
            traits=request.traits,
        )


async def _read_json_object(request: Incoming, limit: int) -> tuple[dict[str, Any], bytes]:
    body = await request.body(limit)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    return payload, body
