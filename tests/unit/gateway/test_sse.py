"""core/sse.py: the SSE reader (across chunks, any line ending, comments, multi-line data), the
framing, and a failed stream's last event in each API's dialect, read back."""

from __future__ import annotations

import orjson
import pytest

from orchestra.gateway.core import sse
from orchestra.gateway.core.dialect import Dialect
from orchestra.gateway.upstream.sse_check import SseCheck

Event = sse.Event


def _read(*chunks: bytes) -> list[Event]:
    parser = sse.SseParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_an_event_split_across_chunks_comes_out_once_whole() -> None:
    parser = sse.SseParser()
    assert parser.feed(b'data: {"a": 1}\n\ndata: {"b"') == [Event(b'{"a": 1}')]
    assert parser.feed(b": 2}\n") == []
    assert parser.feed(b"\ndata: [DONE]\n\n") == [Event(b'{"b": 2}'), Event(sse.DONE_DATA)]


def test_every_byte_in_its_own_chunk() -> None:
    stream = b"event: ping\ndata: 1\n\n: note\ndata: a\ndata: b\n\n"
    assert _read(*(bytes([b]) for b in stream)) == [Event(b"1", "ping"), Event(b"a\nb")]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: x\r\n\r\ndata: y\r\n\r\n"],
        [b"data: x\r\n\r", b"\ndata: y\r", b"\n\r\n"],  # a CRLF split between chunks
        # CR alone ends a line too; a CR last in a chunk waits for the next byte (CRLF's half?)
        [b"data: x\r\rdata: y\r\r", b": more\r\r"],
        [b"data: x\n\r\ndata: y\r\n\n"],  # mixed
    ],
)
def test_crlf_and_cr_line_endings(chunks: list[bytes]) -> None:
    assert _read(*chunks) == [Event(b"x"), Event(b"y")]


def test_comments_blank_lines_and_other_fields_are_skipped() -> None:
    stream = b": loading m, 3 s\n\n\n\nretry: 2000\n\nid: 7\nevent: update\ndata:{}\nfoo: bar\n\n"
    assert _read(stream) == [Event(b"{}", "update")]


def test_multi_line_data_is_joined_and_one_leading_space_dropped() -> None:
    stream = b'data: {\ndata:  "a": 1\ndata\ndata:}\n\n'
    assert _read(stream) == [Event(b'{\n "a": 1\n\n}')]


def test_an_unterminated_event_is_not_an_event() -> None:
    assert _read(b"data: 1\n\ndata: 2\n") == [Event(b"1")]


def test_split_gives_each_block_and_the_rest() -> None:
    data = b"data: 1\n\n\n\ndata: 2\n\ndata: 3"
    blocks, rest = sse.split(data)
    assert rest == b"data: 3"
    assert sum(len(b) + 2 for b in blocks) == len(data) - len(rest)
    assert [sse.block_data(b) for b in blocks] == [b"1", None, b"2"]


def test_frames_read_back() -> None:
    framed = (
        sse.frame(b'{"a": 1}')
        + sse.frame(b"line one\nline two", "note")
        + sse.json_frame({"b": [1, 2]}, "update")
        + sse.comment("loading m, 2 s")
        + sse.retry(2000)
        + sse.DONE
    )
    assert framed.startswith(b'data: {"a": 1}\n\nevent: note\ndata: line one\ndata: line two\n\n')
    assert b": loading m, 2 s\n\nretry: 2000\n\ndata: [DONE]\n\n" in framed
    assert _read(framed) == [
        Event(b'{"a": 1}'),
        Event(b"line one\nline two", "note"),
        Event(b'{"b":[1,2]}', "update"),
        Event(sse.DONE_DATA),
    ]
    assert _read(sse.comment("two\nlines")) == []


def _error(dialect: Dialect, after: bytes = b"") -> tuple[bytes, Event]:
    out = sse.error_event(dialect, "upstream went away", code="stream_interrupted", after=after)
    events = _read(after + out)
    return out, events[-1]


def test_openai_error_event_is_a_data_object_with_error() -> None:
    out, event = _error("openai")
    assert out.startswith(b"data: ") and event.name is None
    assert orjson.loads(event.data) == {
        "error": {
            "message": "upstream went away",
            "type": "upstream_error",
            "param": None,
            "code": "stream_interrupted",
        }
    }


def test_anthropic_error_event_is_named_error_with_anthropics_body() -> None:
    out, event = _error("anthropic")
    assert out.startswith(b"event: error\n") and event.name == "error"
    assert orjson.loads(event.data) == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream went away"},
    }
    overloaded = sse.error_event("anthropic", "busy", status=503)
    assert orjson.loads(_read(overloaded)[0].data)["error"]["type"] == "overloaded_error"


def test_responses_error_event_is_the_specs_and_carries_error_for_the_sdk() -> None:
    tail = (
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"sequence_number": 4,"delta":"tok"}\n\n'
    )
    _, event = _error("responses", after=tail)
    assert event.name == "error"
    data = orjson.loads(event.data)
    assert data["type"] == "error" and data["sequence_number"] == 5
    assert (data["code"], data["message"], data["param"]) == (
        "stream_interrupted",
        "upstream went away",
        None,
    )
    assert data["error"]["message"] == "upstream went away"
    fresh = orjson.loads(_read(sse.error_event("responses", "no", code=503))[0].data)
    assert fresh["sequence_number"] == 0 and fresh["code"] == "503"


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "responses"])
def test_an_error_after_a_partial_event_starts_an_event_of_its_own(dialect: Dialect) -> None:
    out = sse.error_event(dialect, "cut", after=b'data: {"half"')
    assert out.startswith(b"\n\n")
    assert sse.error_event(dialect, "cut", after=b"data: {}\n\n")[:1] != b"\n"
    assert sse.error_event(dialect, "cut", after=b"data: {}\r\n\r\n")[:1] != b"\n"


def test_check_passes_named_events_and_stops_at_the_first_bad_one() -> None:
    good = b'event: a\ndata: {"x": 1}\n\n: comment\n\n'
    check = SseCheck()
    assert check.feed(good + b"event: b\ndata: {") == good
    assert check.feed(b'"y": 2}\n\n') == b'event: b\ndata: {"y": 2}\n\n'
    assert not check.bad
    multi = SseCheck()
    assert multi.feed(b'data: {"a":\ndata: 1}\n\n') == b'data: {"a":\ndata: 1}\n\n'
    bad = SseCheck()
    assert bad.feed(good + b"data: {oops\n\n" + good) == good and bad.bad
