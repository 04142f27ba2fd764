"""`python -m bench --quick` end to end: fake upstream, gateway, JSON with the ratios, PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_bench_quick_writes_json_and_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert set(report["ratios"]) == {"1", "8"}
    for ratios in report["ratios"].values():
        for key in (
            "throughput_ratio_vs_direct",
            "added_latency_p50_ms",
            "chunk_throughput_ratio_vs_direct",
            "added_ttft_p50_ms",
        ):
            assert isinstance(ratios[key], float | int), (key, ratios)
        assert ratios["throughput_ratio_vs_direct"] > 0  # the gateway did serve (speed: make bench)
    assert "method" in report and report["method"]["nonstream_load"]
    for mode in ("nonstream", "stream"):
        for row in report["results"][mode]:
            assert row["direct"]["errors"] == 0 and row["gateway"]["errors"] == 0, row
    pngs = list(tmp_path.glob("bench-*.png"))
    assert pngs and pngs[0].stat().st_size > 1000
    assert (tmp_path / "latest.png").exists()
