"""The control API's wire types (orchestra.protocol): what the supervisor sends is what the
clients parse, and the JSON keeps its shape."""

from __future__ import annotations

import orjson

from orchestra.control import _error_message
from orchestra.protocol import (
    EngineInfo,
    KvEvents,
    ModelInfo,
    ModelStatus,
    NodeLoad,
    PageCache,
    SyncReply,
    error_json,
)


def _entry(api_key: str | None = None) -> ModelInfo:
    engine = EngineInfo(id="a", state="ready", pid=7, port=9001, url="http://127.0.0.1:9001")
    return ModelInfo(
        name="a",
        state="ready",
        upstreams=[engine.url],
        hot=True,
        engines=[engine],
        page_cache=PageCache(bytes_total=10, bytes_resident=5, fraction=0.5),
        api_key=api_key,
    )


def test_a_model_entry_has_every_key_and_api_key_only_when_set() -> None:
    plain = orjson.loads(_entry().model_dump_json())
    assert set(plain) == {
        "name", "managed", "kind", "hot", "state", "upstreams", "draining", "engines", "page_cache",
        "last_used_s_ago", "sleep_mode", "adapters", "expected_s",
    }  # fmt: skip
    assert plain["last_used_s_ago"] is None  # None values are sent, not dropped
    assert set(plain["engines"][0]) == {
        "id", "state", "pid", "port", "url", "gpus", "uptime_s", "restarts", "last_error",
        "last_startup_s", "starting_for_s",
    }  # fmt: skip
    assert orjson.loads(_entry("k").model_dump_json())["api_key"] == "k"


def test_kv_event_endpoints_travel_per_engine_and_old_replies_still_parse() -> None:
    events = KvEvents(publisher="tcp://10.0.0.2:9101", replay="tcp://10.0.0.2:9102")
    entry = _entry().model_copy(update={"kv_events": {"http://127.0.0.1:9001": events}})
    read = SyncReply.model_validate_json(SyncReply(models=[entry]).model_dump_json())
    assert read.models[0].kv_events == {"http://127.0.0.1:9001": events}
    assert read.models[0].kv_events["http://127.0.0.1:9001"].hash_seed == "vllm-none-hash"
    old = ModelStatus.model_validate_json(b'{"name": "a", "state": "ready", "upstreams": []}')
    assert old.kv_events == {}


def test_the_sync_reply_sends_whole_entries_and_a_gateway_reads_its_part() -> None:
    sent = SyncReply(models=[_entry("k")], node=NodeLoad(gpus=2, free_gpus=1)).model_dump_json()
    assert "page_cache" in orjson.loads(sent)["models"][0]  # not cut to ModelStatus
    read = SyncReply.model_validate_json(sent)
    assert read.models == [
        ModelStatus(name="a", state="ready", upstreams=["http://127.0.0.1:9001"], api_key="k")
    ]
    assert read.node.has_room


def test_the_client_reads_errors_with_the_one_reader() -> None:
    body = error_json("no such model", "invalid_request_error", "model_not_found")
    assert _error_message(body, 404) == "no such model"
    assert _error_message(b"<html>bad gateway</html>", 502) == "supervisor answered HTTP 502"
