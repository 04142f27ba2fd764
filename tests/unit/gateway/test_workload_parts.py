"""Pure parts of the workload paths: SSE splitting, vote normalising, multipart spooling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from python_multipart.multipart import MultipartParser

from orchestra.gateway.core.errors import BadRequest, PayloadTooLarge
from orchestra.gateway.edge.multipart import SpooledBody, read_upload
from orchestra.gateway.pipeline.ensembles import normalise

BOUNDARY = "xyzzy"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _form(model: str, data: bytes, model_first: bool = True) -> bytes:
    model_part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
    ).encode()
    file_part = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )
    parts = [model_part, file_part] if model_first else [file_part, model_part]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(body), size):
        yield body[at : at + size]


def _fields(body: bytes) -> dict[str, bytes]:
    """Parse a multipart body back (python-multipart, whole) to name -> value."""
    out: dict[str, bytes] = {}
    current: dict[str, bytes] = {}

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value = data[start:end]
        if b'name="' in value:
            current["name"] = value.split(b'name="')[1].split(b'"')[0]
            current["value"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def on_part_end() -> None:
        out[current["name"].decode()] = current["value"]

    callbacks = {
        "on_header_value": on_header_value,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    parser = MultipartParser(BOUNDARY, callbacks)  # type: ignore[arg-type]
    parser.write(body)
    parser.finalize()
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Yes.", "yes"), ("  **YES**  ", "yes"), ('"No!"', "no"), ("New  York\n", "new york")],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
@pytest.mark.parametrize("model_first", [True, False])
def test_spooled_upload_renames_its_model(chunk: int, model_first: bool) -> None:
    data = bytes(range(256)) * 40
    body = _form("whisper-1", data, model_first)
    upload = asyncio.run(read_upload(_chunks(body, chunk), CTYPE, None, 1 << 20, 512))
    try:
        assert upload.fields == {"model": "whisper-1"}
        assert upload.size == len(body)
        same = SpooledBody(upload)
        assert same.size == len(body)
        renamed = same.with_model("whisper-large")
        raw = b"".join(renamed._parts())
        assert renamed.size == len(raw)
        assert _fields(raw) == {"model": b"whisper-large", "file": data}
    finally:
        upload.close()


def test_upload_limits_and_shape() -> None:
    body = _form("m", b"x" * 5000)
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_upload(_chunks(body, 100), CTYPE, None, 1000, 512))
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_upload(_chunks(body, 100), CTYPE, str(len(body)), 1000, 512))
    with pytest.raises(BadRequest):
        asyncio.run(read_upload(_chunks(body, 100), "application/json", None, 1 << 20, 512))
