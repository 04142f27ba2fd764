"""The Ray Data path on a local Ray (2 CPUs): read_parquet -> map_batches through two gateways
-> write_parquet, against fake engines. Needs the `ray` extra (`pip install '.[ray]'`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import GatewayProcess, fast_gateway_section
from tests.fake_engine import FakeEngineProcess, free_port

ray = pytest.importorskip(
    "ray", reason="the Ray Data path needs the ray extra: pip install '.[ray]'"
)
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
ROWS = 40


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_parquet_through_two_gateways_on_ray(local_ray: None, tmp_path: Path) -> None:
    from orchestra.batch.ray_data import GatewayFleet, run_parquet

    source = tmp_path / "in"
    source.mkdir()
    texts = [f"post number {i}" for i in range(ROWS)]
    pq.write_table(pa.table({"id": list(range(ROWS)), "text": texts}), source / "part.parquet")
    with (
        FakeEngineProcess("--served-model-name", "m1", name="m1") as engine,
        GatewayProcess(_config(engine)) as gw_a,
        GatewayProcess(_config(engine)) as gw_b,
    ):
        fleet = GatewayFleet(
            [gw_a.url, gw_b.url], model="m1", concurrency_per_task=4, sampling={"max_tokens": 2}
        )
        target = tmp_path / "out"
        run_parquet(
            str(source), str(target), fleet, template="Label: {text}", id_column="id", batch_size=8
        )
        sent = engine.stats()["by_path"]["/v1/chat/completions"]
        served = [
            gw.metric("orchestra_requests_total", model="m1", status="200") for gw in (gw_a, gw_b)
        ]
    rows = pq.read_table(target).to_pylist()
    assert sorted(r["id"] for r in rows) == list(range(ROWS))
    assert all(r["text"] == f"post number {r['id']}" for r in rows)
    assert all(r["error"] is None and r["completion_tokens"] == 2 for r in rows)
    assert all(r["custom_id"] == str(r["id"]) for r in rows)
    assert sent == ROWS
    assert sum(served) == ROWS and min(served) > 0  # both gateways took rows


def _config(engine: FakeEngineProcess) -> dict[str, object]:
    return {
        "gateway": fast_gateway_section(free_port()),
        "servers": [{"name": "m1", "url": engine.url}],
    }
