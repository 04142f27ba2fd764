"""What the gateway, the supervisor and their clients say to each other on the wire.

The one error shape both processes send (OpenAI's: `{"error": {"message", "type", "param",
"code"}}`) and the one reader of it; then the control API's requests and replies
(`supervisor/api.py` builds them, `orchestra.control.ControlClient` parses them).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorReply(BaseModel):
    error: ErrorDetail


def error_dict(
    message: str, type_: str, code: str | int | None, param: str | None = None
) -> dict[str, Any]:
    """The error shape as a dict (to embed in a larger reply, or for a JSON response)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_json(message: str, type_: str, code: str | int | None, param: str | None = None) -> bytes:
    """The error shape as JSON bytes: the body of every error response."""
    return orjson.dumps(error_dict(message, type_, code, param))


def parse_error(raw: bytes | str | dict[str, Any] | None) -> ErrorDetail | None:
    """The error in an OpenAI-shaped reply (bytes, text or parsed JSON), or None if it is not
    one. `message` and `type` may be missing upstream (vLLM sends them; others may not)."""
    payload: object = raw
    if isinstance(raw, bytes | str):
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), dict):
        return None
    error = payload["error"]
    try:
        return ErrorDetail(
            message=str(error.get("message", "")),
            type=str(error.get("type") or "upstream_error"),
            param=error.get("param") if isinstance(error.get("param"), str) else None,
            code=error.get("code") if isinstance(error.get("code"), str | int) else None,
        )
    except ValidationError:
        return None


# ---- the control API ---------------------------------------------------------------------------
# Replies are read leniently (`extra="ignore"`): a client keeps working against a supervisor that
# sends more than it knows.


class Health(BaseModel):
    """`GET /health`."""

    status: str


class EngineInfo(BaseModel):
    """One engine of a model-table entry."""

    model_config = ConfigDict(extra="ignore")

    id: str
    state: str
    pid: int | None = None
    port: int
    url: str
    gpus: list[int] = []
    uptime_s: float | None = None
    restarts: int = 0
    last_error: str | None = None
    last_startup_s: float | None = None  # how long its last start (or wake) took
    # how long the start in progress has run (None unless STARTING): with last_startup_s,
    # the time a loading model has left
    starting_for_s: float | None = None


class PageCache(BaseModel):
    """How much of a model's weight files sits in the page cache."""

    model_config = ConfigDict(extra="ignore")

    bytes_total: int = 0
    bytes_resident: int = 0
    fraction: float = 0.0


class KvEvents(BaseModel):
    """Where one engine publishes its KV-cache events (vLLM's ZMQ publisher) and how it hashes
    blocks, so a gateway can compute the same block hashes (`balancing: kv_aware`)."""

    model_config = ConfigDict(extra="ignore")

    publisher: str  # ZMQ PUB: multipart (topic, seq: 8 bytes big-endian, msgpack KVEventBatch)
    replay: str | None = None  # ZMQ ROUTER: send the first seq wanted, get the buffered batches
    hash_algo: str = "sha256"  # vLLM --prefix-caching-hash-algo
    hash_seed: str = "vllm-none-hash"  # NONE_HASH's seed: PYTHONHASHSEED when set, else this


class ModelStatus(BaseModel):
    """The part of one model-table entry the gateway routes by."""

    model_config = ConfigDict(extra="ignore")

    name: str
    state: str
    upstreams: list[str] = []  # READY engines that take new requests
    draining: list[str] = []  # engines being evicted: no new requests, in-flight ones finish
    adapters: list[str] = []  # LoRA adapters its engines serve (config and runtime)
    api_key: str | None = None  # the engines' --api-key (engines off loopback); send as Bearer
    kv_events: dict[str, KvEvents] = {}  # engine URL -> its KV events (absent in old replies)


class ModelInfo(ModelStatus):
    """One entry of the model table, whole: `GET /models/{name}`, every command's reply, each
    item of `GET /models` and of the sync reply. `api_key` and `kv_events` are sent only when
    there are some."""

    managed: bool = True
    kind: str = "vllm"  # what serves it: vLLM, or a model's own engine (`whisper`, ...)
    hot: bool = False
    engines: list[EngineInfo] = []
    page_cache: PageCache = PageCache()
    last_used_s_ago: float | None = None
    sleep_mode: bool = False
    expected_s: float | None = None  # the cost model's expected wait for a request now

    @model_serializer(mode="wrap")
    def _without_absent_key(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("api_key") is None:
            out.pop("api_key", None)
        if not out.get("kv_events"):
            out.pop("kv_events", None)  # engines without KV events: the entry as before
        return out


class ModelTable(BaseModel):
    """`GET /models`."""

    models: list[ModelInfo]


class GpuHolder(BaseModel):
    index: int
    engine: str | None  # the engine holding it, None when free


class GpuTable(BaseModel):
    """`GET /gpus`."""

    gpus: list[GpuHolder]


class LogsReply(BaseModel):
    """`GET /models/{name}/logs`: the lines, and the byte offset the next follow read starts at."""

    name: str
    lines: list[str]
    offset: int


class GatewayReport(BaseModel):
    """`POST /gateways/{id}/sync`: what a gateway tells the supervisor on each sync.

    `inflight` counts this gateway's requests per engine URL. `draining_seen` lists the engine
    URLs it has taken out of rotation (it learned they are draining): for those, `inflight` is
    final — it can only go down — so the supervisor may stop the engine once it reads 0.
    """

    demand: dict[str, int] = {}
    inflight: dict[str, int] = {}
    draining_seen: list[str] = []


class NodeLoad(BaseModel):
    """How full a node is, from its supervisor's sync reply (where to place a cold model)."""

    model_config = ConfigDict(extra="ignore")

    resident: int = 0  # engines holding GPUs or a resident slot (or about to)
    gpus: int = 0  # GPUs the supervisor manages (0 = CPU host)
    free_gpus: int = 0
    free_slots: int | None = None  # supervisor.max_resident minus resident; None = no bound

    @property
    def has_room(self) -> bool:
        """One more engine fits without evicting anything (a 1-GPU engine on a GPU node)."""
        slots_ok = self.free_slots is None or self.free_slots > 0
        return slots_ok and (self.gpus == 0 or self.free_gpus > 0)


class SyncReply(BaseModel):
    """The sync's reply: the model table and the node's load. The supervisor sends whole
    entries (`ModelInfo`); a gateway reads the routing part of each (`ModelStatus`)."""

    model_config = ConfigDict(extra="ignore")

    models: list[SerializeAsAny[ModelStatus]] = []
    node: NodeLoad = NodeLoad()


class AdapterSpec(BaseModel):
    """`POST /models/{name}/adapters`: load a LoRA adapter on the model's engines."""

    name: str = Field(min_length=1, description="the `model` clients will send")
    path: str = Field(min_length=1, description="folder with adapter_config.json, on this host")


class AdaptersReply(BaseModel):
    """The adapters a model serves after a load or an unload."""

    name: str
    adapters: list[str]
