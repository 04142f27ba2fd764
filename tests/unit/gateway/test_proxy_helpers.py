"""Pure helpers of the proxy: usage from a stream's tail, Retry-After, metrics usage counting."""

from __future__ import annotations

import pytest

from orchestra.gateway.metrics import GatewayMetrics
from orchestra.gateway.upstream.proxy import _retry_after_s
from orchestra.gateway.upstream.usage import json_reply_usage, usage_from_tail

USAGE = b'{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3}'
CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE_CHUNK = b'data: {"id":"c","choices":[],"usage":' + USAGE + b"}\n\n"
DONE = b"data: [DONE]\n\n"


def test_usage_from_a_stream_with_include_usage() -> None:
    tail = CHUNK + CHUNK + USAGE_CHUNK + DONE
    assert usage_from_tail(tail) == {"prompt_tokens": 5, "total_tokens": 8, "completion_tokens": 3}


def test_usage_in_the_very_last_bytes_without_done() -> None:
    assert usage_from_tail(CHUNK + USAGE_CHUNK.rstrip(b"\n")) == {
        "prompt_tokens": 5,
        "total_tokens": 8,
        "completion_tokens": 3,
    }


def test_no_usage_chunk() -> None:
    assert usage_from_tail(CHUNK + DONE) is None  # only "usage": null
    assert usage_from_tail(b"data: [DONE]\n\n") is None
    assert usage_from_tail(b"") is None


def test_usage_whose_data_prefix_fell_off_the_tail() -> None:
    assert usage_from_tail(b'ces":[],"usage":' + USAGE + b"}\n\n" + DONE) is None


def test_truncated_or_malformed_usage_chunk() -> None:
    assert usage_from_tail(b'data: {"choices":[],"usage":{"prompt_tok') is None
    assert usage_from_tail(b'data: ["usage"]\n\n') is None


def test_usage_text_inside_content_is_not_mistaken() -> None:
    chunk = b'data: {"choices":[{"delta":{"content":"say \\"usage\\""}}]}\n\n'
    assert usage_from_tail(chunk + DONE) is None


def test_crlf_separated_events() -> None:
    tail = USAGE_CHUNK.replace(b"\n", b"\r\n") + DONE.replace(b"\n", b"\r\n")
    assert usage_from_tail(tail) == {"prompt_tokens": 5, "total_tokens": 8, "completion_tokens": 3}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1", 1.0), ("2.5", 2.5), (None, None), ("", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert _retry_after_s(value) == seconds


def _tokens(metrics: GatewayMetrics, kind: str) -> float | None:
    return metrics.registry.get_sample_value("orchestra_tokens_total", {"model": "m", "kind": kind})


def test_count_usage() -> None:
    metrics = GatewayMetrics()
    metrics.count_usage("m", {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    metrics.count_usage("m", {"prompt_tokens": 2, "completion_tokens": 0})
    assert _tokens(metrics, "prompt") == 7
    assert _tokens(metrics, "completion") == 3


@pytest.mark.parametrize(
    "usage", [None, "usage", [], {"prompt_tokens": "5"}, {"prompt_tokens": -1}, {}]
)
def test_count_usage_ignores_junk(usage: object) -> None:
    metrics = GatewayMetrics()
    metrics.count_usage("m", usage)
    assert _tokens(metrics, "prompt") is None
    assert _tokens(metrics, "completion") is None


def test_metrics_registries_are_independent() -> None:
    one, two = GatewayMetrics(), GatewayMetrics()
    one.requests.labels("m", "200").inc()
    assert (
        two.registry.get_sample_value("orchestra_requests_total", {"model": "m", "status": "200"})
        is None
    )
    assert b"orchestra_requests_total" in one.render()


def test_json_reply_usage() -> None:
    body = b'{"id":"c","choices":[],"usage":' + USAGE + b"}"
    assert json_reply_usage(body, "application/json") == (
        True,
        {"prompt_tokens": 5, "total_tokens": 8, "completion_tokens": 3},
    )
    assert json_reply_usage(b'{"id":"c"}', "application/json; charset=utf-8") == (True, None)
    assert json_reply_usage(b"[1, 2]", "application/json") == (True, None)
    assert json_reply_usage(b"{not json", "application/json") == (False, None)
    assert json_reply_usage(b"{not json", "text/plain") == (True, None)  # not ours to judge
