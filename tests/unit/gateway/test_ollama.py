from __future__ import annotations

import orjson
import pytest

from orchestra.gateway.core.errors import BadRequest
from orchestra.gateway.upstream.ollama import StreamTranslator, from_ollama, to_ollama
from orchestra.gateway.upstream.sse_check import SseCheck

FINAL = {
    "model": "t",
    "created_at": "2024-01-01T00:00:00Z",
    "done": True,
    "done_reason": "stop",
    "total_duration": 5_000_000,
    "prompt_eval_count": 3,
    "eval_count": 2,
}


def test_chat_request_translation() -> None:
    body = to_ollama(
        "/v1/chat/completions",
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            "max_tokens": 5,
            "temperature": 0.2,
            "stop": "\n",
            "stream": True,
            "response_format": {"type": "json_object"},
        },
        "llama3",
    )
    assert body["model"] == "llama3" and body["stream"] is True and body["format"] == "json"
    assert body["messages"][1] == {"role": "user", "content": "hi"}
    assert body["options"] == {"temperature": 0.2, "num_predict": 5, "stop": ["\n"]}
    with pytest.raises(BadRequest):
        to_ollama("/v1/chat/completions", {"messages": []}, "t")
    gen = to_ollama("/v1/completions", {"prompt": ["abc"]}, "t")
    assert gen["prompt"] == "abc" and gen["raw"] is True and gen["stream"] is False


def test_whole_chat_reply() -> None:
    line = {**FINAL, "message": {"role": "assistant", "content": "Hi there"}}
    out = from_ollama("/v1/chat/completions", line, "orch")
    assert out["object"] == "chat.completion" and out["model"] == "orch"
    assert out["choices"][0]["message"]["content"] == "Hi there"
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    text = from_ollama("/v1/completions", {**FINAL, "response": "x", "done_reason": "length"}, "o")
    assert text["choices"][0] == {
        "index": 0,
        "text": "x",
        "finish_reason": "length",
        "logprobs": None,
    }


def _data(sse: bytes) -> list[object]:
    return [e[6:] if e[6:] == b"[DONE]" else orjson.loads(e[6:]) for e in sse.split(b"\n\n") if e]


def test_stream_translation_with_usage() -> None:
    tr = StreamTranslator("/v1/chat/completions", "orch", include_usage=True)
    out = tr.feed(b'{"model":"t","message":{"role":"assistant","content":"He"},"done":false}\n')
    out += tr.feed(b"\n")
    out += tr.feed(orjson.dumps({**FINAL, "message": {"role": "assistant", "content": ""}}))
    events = _data(out)
    assert events[-1] == b"[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # type: ignore[index]
    assert events[1]["choices"][0]["delta"] == {"content": "He"}  # type: ignore[index]
    assert events[2]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert events[3]["usage"]["total_tokens"] == 5  # type: ignore[index]
    assert tr.done and tr.feed(b'{"done":true}') == b""


def test_stream_error_line() -> None:
    tr = StreamTranslator("/v1/completions", "orch", include_usage=False)
    out = tr.feed(b'{"error":"out of memory"}')
    (event,) = _data(out)
    assert "out of memory" in event["error"]["message"]  # type: ignore[index]
    assert tr.done


def test_sse_check() -> None:
    check = SseCheck()
    assert check.feed(b"data: {") == b""
    assert check.feed(b'"a": 1}\n\ndata: [DO') == b'data: {"a": 1}\n\n'
    assert check.feed(b"NE]\n\n") == b"data: [DONE]\n\n"
    bad = SseCheck()
    assert bad.feed(b'data: {"a": 1}\n\ndata: {"b": \n\ndata: {}\n\n') == b'data: {"a": 1}\n\n'
    assert bad.bad
    crlf = SseCheck()
    assert crlf.feed(b"data: {}\r\n\r\n") == b"data: {}\r\n\r\n" and crlf.off
