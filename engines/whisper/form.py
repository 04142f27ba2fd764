"""OpenAI's multipart form for /v1/audio/transcriptions and /translations, checked field by field.

Every field OpenAI defines and this engine does not serve (`include[]`, `chunking_strategy`,
`stream=true`, ...) is a 400 naming it, as is any unknown field: nothing is ignored silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .errors import ApiError, bad_request
from .formats import FORMATS, FORMATS_BY_NAME, Format
from .transcriber import Options, Task

COMMON = frozenset({"file", "model", "prompt", "response_format", "temperature"})
FIELDS: dict[Task, frozenset[str]] = {
    "transcribe": COMMON | {"language", "timestamp_granularities[]", "stream"},
    "translate": COMMON,
}
GRANULARITIES = frozenset({"word", "segment"})
MAX_FIELDS = 32


@dataclass(frozen=True, slots=True)
class AudioRequest:
    upload: UploadFile
    filename: str
    options: Options
    response_format: Format


async def read_form(request: Request, max_upload_bytes: int) -> FormData:
    """The request's form; a malformed body or an upload over the limit is an ApiError."""
    try:
        form = await request.form(max_files=1, max_fields=MAX_FIELDS)
    except HTTPException as e:  # Starlette's answer to a malformed multipart body
        raise bad_request(f"malformed multipart body: {e.detail}", None, "invalid_body") from e
    upload = form.get("file")
    if isinstance(upload, UploadFile) and (upload.size or 0) > max_upload_bytes:
        await form.close()
        raise ApiError(
            413,
            f"the file is {upload.size} bytes; the limit is {max_upload_bytes}",
            code="file_too_large",
            param="file",
        )
    return form


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"`{name}` must be a text field, not a file", name)
    return value


def check_model(form: FormData, served_name: str) -> None:
    model = _text(form, "model")
    if not model:
        raise bad_request("`model` is required", "model", "missing_required_parameter")
    if model != served_name:
        raise ApiError(
            404,
            f"The model `{model}` does not exist (this engine serves `{served_name}`).",
            code="model_not_found",
            param="model",
        )


def parse(form: FormData, task: Task, served_name: str, languages: frozenset[str]) -> AudioRequest:
    """The request `form` makes, or the ApiError that says what is wrong with it."""
    unknown = sorted(set(form.keys()) - FIELDS[task])
    if unknown:
        raise bad_request(
            f"unsupported parameter(s) for this endpoint: {', '.join(unknown)}",
            unknown[0],
            "unsupported_parameter",
        )
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise bad_request(
            "`file` (an audio upload) is required", "file", "missing_required_parameter"
        )
    check_model(form, served_name)
    name = _text(form, "response_format") or "json"
    fmt = FORMATS_BY_NAME.get(name)
    if fmt is None:
        raise bad_request(
            f"`response_format` {name!r} is not one of {', '.join(FORMATS)}", "response_format"
        )
    language = _text(form, "language") or None
    if language is not None and language not in languages:
        supported = ", ".join(sorted(languages))
        raise bad_request(
            f"language {language!r} is not one this model knows ({supported})", "language"
        )
    temperature = _temperature(_text(form, "temperature"))
    granularities = set(form.getlist("timestamp_granularities[]"))
    if not granularities <= GRANULARITIES:
        raise bad_request(
            "`timestamp_granularities[]` takes word and/or segment", "timestamp_granularities"
        )
    if granularities and fmt != "verbose_json":
        raise bad_request(
            "`timestamp_granularities[]` needs response_format verbose_json",
            "timestamp_granularities",
        )
    if (_text(form, "stream") or "false").lower() != "false":
        raise bad_request("streaming transcriptions are not supported", "stream", "unsupported")
    options = Options(
        task=task,
        language=language,
        prompt=_text(form, "prompt") or None,
        temperature=temperature,
        word_timestamps="word" in granularities,
    )
    return AudioRequest(upload, upload.filename or "file", options, fmt)


def _temperature(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise bad_request(f"`temperature` {raw!r} must be a number from 0 to 1", "temperature")
    return value
