"""Datasets bigger than one machine: Ray Data calling a fleet of Orchestra gateways over HTTP.

Optional (`pip install 'orchestra[ray]'`); the core never imports Ray. The whole API:

    import ray
    from orchestra.batch.ray_data import GatewayFleet, run_parquet

    ray.init()                                         # or an existing cluster
    fleet = GatewayFleet(["http://gw-1:8000", "http://gw-2:8000"], model="smollm2")
    run_parquet("s3://bucket/in/", "s3://bucket/out/", fleet, template="Label: {text}")

or, inside your own pipeline, `fleet.apply(ds, ...)` is the `map_batches` step:
`ray.data.read_parquet(...)` -> `fleet.apply(ds)` -> `.write_parquet(...)`. Each Ray task sends
its block's rows with bounded concurrency (`concurrency_per_task`), spreads them over the
gateways, and retries 429/5xx/connection errors (`retries`) at the batch priority, so the
gateways pace the engines exactly as they do for `orchestra batch run`. Output rows keep the
input columns beside `answer`, `finish_reason`, usage, `status_code` and `error`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from orchestra.batch.data import RequestBuilder
from orchestra.batch.run import RunOptions, send_row


@dataclass
class GatewayFleet:
    gateways: list[str]
    model: str
    endpoint: str = "chat"
    concurrency_per_task: int = 16
    retries: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 600.0
    priority: int | None = 1000
    api_key: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)

    def apply(
        self,
        ds: Any,
        *,
        template: str | None = None,
        system: str | None = None,
        id_column: str | None = None,
        batch_size: int = 64,
        tasks: int | None = None,
    ) -> Any:
        """The `map_batches` step: a Ray Dataset in, a Ray Dataset of result rows out."""
        if not self.gateways:
            raise ValueError("GatewayFleet needs at least one gateway URL")
        builder = RequestBuilder(
            self.model, self.endpoint, template, system, id_column, dict(self.sampling)
        )
        call = _BlockCaller(self, builder)
        kwargs: dict[str, Any] = {"batch_format": "pyarrow", "batch_size": batch_size}
        if tasks is not None:
            kwargs["concurrency"] = tasks
        return ds.map_batches(call, **kwargs)


class _BlockCaller:
    """A picklable function of one block (a `pyarrow.Table`): its rows through the fleet."""

    def __init__(self, fleet: GatewayFleet, builder: RequestBuilder) -> None:
        self.fleet = fleet
        self.builder = builder

    def __call__(self, block: Any) -> Any:
        import pyarrow as pa

        rows = block.to_pylist()
        results = asyncio.run(self._send(rows))
        return pa.Table.from_pylist(results)

    async def _send(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fleet = self.fleet
        headers = {"content-type": "application/json"}
        if fleet.api_key:
            headers["authorization"] = f"Bearer {fleet.api_key}"
        if fleet.priority is not None:
            headers["x-orchestra-priority"] = str(fleet.priority)
        limit = asyncio.Semaphore(max(1, fleet.concurrency_per_task))
        timeout = aiohttp.ClientTimeout(total=fleet.timeout_s)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

            async def one(row: dict[str, Any]) -> dict[str, Any]:
                custom_id = _row_id(self.builder, row)
                url = fleet.gateways[
                    int(hashlib.sha1(custom_id.encode()).hexdigest(), 16) % len(fleet.gateways)
                ]
                options = RunOptions(
                    url=url,
                    retries=fleet.retries,
                    backoff_s=fleet.backoff_s,
                    timeout_s=fleet.timeout_s,
                )
                async with limit:
                    return await send_row(session, options, self.builder, custom_id, row)

            return list(await asyncio.gather(*(one(row) for row in rows)))


def _row_id(builder: RequestBuilder, row: dict[str, Any]) -> str:
    """The id column, the OpenAI line's custom_id, or a digest of the row (Ray blocks have no
    global index; the digest is the same on every run, so results can be joined back)."""
    if builder.id_column or ("custom_id" in row and "body" in row):
        return builder.custom_id(row, 0)
    digest = hashlib.sha1(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()
    return f"row-{digest[:16]}"


def run_parquet(source: str, target: str, fleet: GatewayFleet, **apply: Any) -> None:
    """`read_parquet(source)` -> `fleet.apply` -> `write_parquet(target)`."""
    import ray.data

    fleet.apply(ray.data.read_parquet(source), **apply).write_parquet(target)
