"""A multipart upload, spooled (memory up to a threshold, then a temporary file) and re-sent.

`read_upload` streams the request body into a SpooledTemporaryFile while a streaming multipart
parser picks out the small form fields (`model`, `stream`, ...) and where the `model` value sits
in the raw bytes; the file part is never parsed into memory. `SpooledBody` is the aiohttp
payload that sends those bytes upstream again, from the start on every attempt (retries), with
the `model` value replaced when an alias or a fallback chain sends it to another model.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..core.errors import BadRequest, PayloadTooLarge

_FIELD_LIMIT = 4096  # form fields other than files are small: longer values are not kept
_WRITE_CHUNK = 256 * 1024


@dataclass
class Upload:
    spool: IO[bytes]
    size: int
    fields: dict[str, str] = field(default_factory=dict)
    model_span: tuple[int, int] | None = None  # where the `model` value is in the raw body
    files: list[str] = field(default_factory=list)  # the names of the file parts

    def close(self) -> None:
        self.spool.close()


class _FieldFinder:
    """python-multipart callbacks: collect small fields and the model value's byte span."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.files: list[str] = []
        self.oversized: list[str] = []  # fields longer than _FIELD_LIMIT (not kept)
        self.ended = False  # the closing boundary was seen (the body is whole)
        self.model_span: tuple[int, int] | None = None
        self.offset = 0  # bytes fed before the current chunk
        self.chunk: bytes = b""
        self._header_field = b""
        self._header_value = b""
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()
        self._span: list[int] | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._hfield,
            "on_header_value": self._hvalue,
            "on_header_end": self._hend,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_end": self._finished,
        }

    def _finished(self) -> None:
        self.ended = True

    def _begin(self) -> None:
        self._name, self._is_file, self._value, self._span = None, False, bytearray(), []

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _hend(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            _, options = parse_options_header(self._header_value)
            name = options.get(b"name")
            self._name = name.decode("utf-8", "replace") if name is not None else None
            self._is_file = b"filename" in options
        self._header_field = self._header_value = b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file or self._name is None or len(self._value) > _FIELD_LIMIT:
            return
        self._value += data[start:end]
        if self._span is not None:
            # Offsets are exact only for data that is a slice of the chunk being fed.
            if data is self.chunk:
                if not self._span:
                    self._span.append(self.offset + start)
                self._span[1:] = [self.offset + end]
            else:
                self._span = None

    def _end(self) -> None:
        if self._is_file:
            self.files.append(self._name or "")
            return
        if self._name is None:
            return
        if len(self._value) > _FIELD_LIMIT:
            self.oversized.append(self._name)
            return
        self.fields[self._name] = self._value.decode("utf-8", "replace")
        if self._name == "model" and self._span is not None:
            self.model_span = (self._span[0], self._span[-1]) if self._span else None


def _check_whole(finder: _FieldFinder) -> None:
    if not finder.ended:
        raise BadRequest("the multipart body ends before its closing boundary (truncated?)")
    if finder.oversized:
        name = finder.oversized[0]
        raise BadRequest(f"form field `{name}` is longer than {_FIELD_LIMIT} bytes", param=name)


async def read_upload(
    chunks: AsyncIterator[bytes],
    content_type: str,
    declared_length: str | None,
    max_bytes: int,
    spool_bytes: int,
) -> Upload:
    """Spool a multipart body; 400 for a body that is not multipart, is malformed or truncated,
    or has an oversized form field; 413 past the limit."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise BadRequest("the body must be multipart/form-data with a boundary")
    if declared_length is not None and declared_length.isdigit():
        if int(declared_length) > max_bytes:
            raise PayloadTooLarge(f"upload is {declared_length} bytes; the limit is {max_bytes}")
    finder = _FieldFinder()
    parser = MultipartParser(boundary, finder.callbacks())  # type: ignore[arg-type]
    spool = tempfile.SpooledTemporaryFile(max_size=spool_bytes)
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
            spool.write(chunk)
            finder.chunk = bytes(chunk)
            parser.write(finder.chunk)
            finder.offset += len(chunk)
        parser.finalize()
        _check_whole(finder)
    except MultipartParseError as exc:
        spool.close()
        raise BadRequest(f"the multipart body is malformed: {exc}") from None
    except BaseException:
        spool.close()
        raise
    upload = Upload(spool, size, finder.fields, finder.model_span, finder.files)
    if upload.model_span is not None:
        start, end = upload.model_span
        spool.seek(start)
        if spool.read(end - start).decode("utf-8", "replace") != finder.fields.get("model"):
            upload.model_span = None
    return upload


class SpooledBody(Payload):
    """The spooled bytes as an aiohttp payload, re-readable for every attempt."""

    def __init__(self, upload: Upload, model: str | None = None) -> None:
        self.upload = upload
        self._model = model.encode() if model is not None else None
        span = upload.model_span
        delta = 0
        if self._model is not None and span is not None:
            delta = len(self._model) - (span[1] - span[0])
        super().__init__(upload.spool, content_type=None)
        self._size = upload.size + delta

    def with_model(self, name: str) -> SpooledBody:
        if self.upload.model_span is None:
            raise BadRequest(
                "cannot send this upload to another model: its `model` field could not be located",
                param="model",
            )
        return SpooledBody(self.upload, name)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return "".join(part.decode(encoding, errors) for part in self._parts())

    def _parts(self) -> list[bytes]:
        spool = self.upload.spool
        spool.seek(0)
        data = spool.read()
        if self._model is None or self.upload.model_span is None:
            return [data]
        start, end = self.upload.model_span
        return [data[:start], self._model, data[end:]]

    async def write(self, writer: AbstractStreamWriter) -> None:
        spool = self.upload.spool
        span = self.upload.model_span if self._model is not None else None
        position = 0
        spool.seek(0)
        while True:
            limit = _WRITE_CHUNK
            if span is not None and position < span[0]:
                limit = min(limit, span[0] - position)
            chunk = spool.read(limit)
            if not chunk:
                return
            position += len(chunk)
            if span is not None and position == span[0]:
                await writer.write(chunk)
                await writer.write(self._model or b"")
                spool.seek(span[1])
                position = span[1]
                span = None
                continue
            await writer.write(chunk)

    async def close(self) -> None:
        """Kept open for the next attempt; the upload is closed by the route when done."""

    def _close(self) -> None:
        """As `close`."""
