"""Malformed uploads fail well: every bad multipart body to an upload path gets a 4xx in the
OpenAI error shape naming what is wrong, nothing reaches the engine, and the gateway keeps
serving. Bodies: a valid boundary then random bytes, a valid body cut at random points, no
`file` part, a wrong content type, an oversized form field."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayProcess, fast_gateway_section, reset_engine
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = pytest.mark.timeout(180)
BOUNDARY = "fuzzBoundary7"
PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/files")
CASES = 60  # per path and kind of damage; seeded, so a failure reproduces


def _part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def _whole(path: str, file: bytes = b"RIFF....WAVEfmt ") -> bytes:
    fields = _part("purpose", b"batch") if path == "/v1/files" else _part("model", b"m")
    return fields + _part("file", file, "a.bin") + f"--{BOUNDARY}--\r\n".encode()


def _bodies(path: str, rng: random.Random) -> Iterator[tuple[str, bytes, str]]:
    multipart = f"multipart/form-data; boundary={BOUNDARY}"
    whole = _whole(path)
    for _ in range(CASES):
        noise = rng.randbytes(rng.randint(1, 600))
        yield "random", f"--{BOUNDARY}\r\n".encode() + noise, multipart
        yield "truncated", whole[: rng.randint(1, len(whole) - len(BOUNDARY) - 5)], multipart
    field = "purpose" if path == "/v1/files" else "model"
    end = f"--{BOUNDARY}--\r\n".encode()
    yield "no file", _part("model", b"m") + _part("purpose", b"batch") + end, multipart
    yield "content type", whole, "text/plain"
    oversized = _part(field, b"m" * 100_000) + _part("file", b"x", "a.bin") + end
    yield "oversized field", oversized, multipart


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess(name="m") as one:
        yield one


@pytest.fixture(scope="module")
def gateway(
    engine: FakeEngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    batch_dir = tmp_path_factory.mktemp("batch")
    config = {
        "gateway": fast_gateway_section(free_port()),
        "servers": [{"name": "m", "url": engine.url}],
        "batch": {"enabled": True, "dir": str(batch_dir)},
    }
    with GatewayProcess(config) as gw:
        yield gw


@pytest.mark.parametrize("path", PATHS)
def test_malformed_uploads_get_a_clear_400(
    path: str, gateway: GatewayProcess, engine: FakeEngineProcess
) -> None:
    reset_engine(engine)
    rng = random.Random(path)
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        for kind, body, content_type in _bodies(path, rng):
            reply = http.post(path, content=body, headers={"content-type": content_type})
            assert 400 <= reply.status_code < 500, (kind, body[:80], reply.status_code, reply.text)
            error = reply.json()["error"]
            assert error["message"] and error["type"] == "invalid_request_error", (kind, error)
        assert http.get("/health").status_code == 200
    assert engine.stats()["records"] == []  # nothing malformed was forwarded
