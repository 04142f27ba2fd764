"""OpenAI's Files and Batches routes: `/v1/files*` and `/v1/batches*`.

Handlers only check the request and read or write the store; the runner does the work (it is
woken when a batch is created or cancelled).
"""

from __future__ import annotations

import asyncio
import shutil
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.responses import FileResponse, Response

from ..core.errors import BadRequest, NotFound, PayloadTooLarge
from .shapes import (
    batch_object,
    file_object,
    new_id,
    now,
    page,
    window_seconds,
)

if TYPE_CHECKING:
    from .service import BatchService

_MULTIPART_SLACK = 64 * 1024  # boundaries and the purpose field around the file's bytes
_CANCELLABLE = ("validating", "in_progress")


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _service(request: Request) -> BatchService:
    service: BatchService | None = getattr(request.app.state, "batch", None)
    if service is None:
        raise NotFound("the batch API is disabled on this gateway (batch.enabled: false)")
    return service


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise BadRequest(f"limit must be an integer from 1 to {most}", param="limit")
    return int(raw)


async def create_file(request: Request) -> Response:
    service = _service(request)
    limit = service.config.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _MULTIPART_SLACK:
        raise PayloadTooLarge(
            f"the upload is {declared} bytes; files may be at most {limit} bytes "
            "(batch.max_upload_bytes)"
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("the body must be multipart/form-data with a `file` and a `purpose`")
    async with request.form(max_files=1, max_fields=8) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise BadRequest("you must provide a `file` (multipart form)", param="file")
        if purpose != "batch":
            raise BadRequest(
                f"purpose must be 'batch' on this gateway, got {purpose!r}", param="purpose"
            )
        size = upload.size or 0
        if size > limit:
            raise PayloadTooLarge(
                f"the file is {size} bytes; files may be at most {limit} bytes "
                "(batch.max_upload_bytes)"
            )
        obj = file_object(new_id("file-"), upload.filename or "upload.jsonl", purpose, size, now())
        tmp = service.store.files_dir / f"{obj['id']}.upload"
        await _copy(upload, tmp)
    await service.store.add_file(obj, tmp)
    return _json(obj)


async def list_files(request: Request) -> Response:
    store = _service(request).store
    q = request.query_params
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("order must be 'asc' or 'desc'", param="order")
    data, more = await store.list_files(
        q.get("purpose"), _limit(request, 10_000, 10_000), q.get("after"), order == "asc"
    )
    return _json(page(data, more))


async def get_file(request: Request, file_id: str) -> Response:
    return _json(await _file(request, file_id))


async def file_content(request: Request, file_id: str) -> Response:
    await _file(request, file_id)
    return FileResponse(
        _service(request).store.path(file_id), media_type="application/octet-stream"
    )


async def delete_file(request: Request, file_id: str) -> Response:
    if not await _service(request).store.delete_file(file_id):
        raise NotFound(f"No such File object: {file_id}", param="id")
    return _json({"id": file_id, "object": "file", "deleted": True})


async def create_batch(request: Request) -> Response:
    service = _service(request)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    obj = await _new_batch(service, body)
    key = request.scope.get("state", {}).get("api_key")  # set by auth when keys are configured
    await service.store.add_batch(obj, owner=key.name if key is not None else None)
    service.wake()
    return _json(obj)


async def list_batches(request: Request) -> Response:
    data, more = await _service(request).store.list_batches(
        _limit(request, 20, 100), request.query_params.get("after")
    )
    return _json(page(data, more))


async def get_batch(request: Request, batch_id: str) -> Response:
    obj = await _service(request).store.get_batch(batch_id)
    if obj is None:
        raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
    return _json(obj)


async def cancel_batch(request: Request, batch_id: str) -> Response:
    service = _service(request)
    obj = await service.store.update_batch(
        batch_id, _CANCELLABLE, status="cancelling", cancelling_at=now()
    )
    if obj is None:
        current = await service.store.get_batch(batch_id)
        if current is None:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
        if current["status"] in ("cancelling", "cancelled"):
            return _json(current)
        raise BadRequest(
            f"Cannot cancel a batch with status '{current['status']}'.", code="invalid_state"
        )
    service.wake()
    return _json(obj)


async def _file(request: Request, file_id: str) -> dict[str, Any]:
    obj = await _service(request).store.get_file(file_id)
    if obj is None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return obj


async def _copy(upload: UploadFile, target: Any) -> None:
    await upload.seek(0)

    def do() -> None:
        with open(target, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1024 * 1024)

    await asyncio.to_thread(do)


async def _new_batch(service: BatchService, body: dict[str, Any]) -> dict[str, Any]:
    file_id = body.get("input_file_id")
    endpoint = body.get("endpoint")
    window = body.get("completion_window")
    metadata = body.get("metadata")
    if not isinstance(file_id, str):
        raise BadRequest("Missing required parameter: 'input_file_id'.", param="input_file_id")
    if endpoint not in service.endpoints:
        raise BadRequest(
            f"endpoint must be one of {sorted(service.endpoints)}, got {endpoint!r}",
            param="endpoint",
        )
    seconds = window_seconds(window) if isinstance(window, str) else None
    if seconds is None or not isinstance(window, str):
        raise BadRequest(
            f"completion_window must look like '24h' (or '<n>s|m|h|d'), got {window!r}",
            param="completion_window",
        )
    if metadata is not None and not (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise BadRequest("metadata must be at most 16 string pairs", param="metadata")
    source = await service.store.get_file(file_id)
    if source is None:
        raise NotFound(f"No such File object: {file_id}", param="input_file_id")
    if source["purpose"] != "batch":
        raise BadRequest(
            f"file {file_id} has purpose {source['purpose']!r}, not 'batch'", param="input_file_id"
        )
    created = now()
    return batch_object(
        new_id("batch_"), file_id, endpoint, window, metadata, created, created + seconds
    )
