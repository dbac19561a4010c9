"""The benchmark suite cannot rot: a tiny fanflow-only run of `bench/suite.py --smoke` (no peer
installs, no network) must produce the table with every scenario row and sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_ROWS = [
    "start → 4 branches × 0.05 s → join",
    "start → 32 branches × 0.05 s → join",
    "A → (B 0.03 ‖ C 0.01 → D 0.03) → E",
    "100 items × 0.01 s, cap 10",
    "chain of 100 no-op nodes",
    "chain of 1,000 no-op nodes",
    "per-node growth 100 → 1,000",
    "map of 1,000 no-op items, cap 100",
    "CLI startup: `--version`",
    "`python -c 'import …'`",
    "10 shell items `sleep 0.05`, cap 5, whole process",
    "10 concurrent calls, mock latency 0.05 s",
]


@pytest.mark.timeout(300)
def test_bench_suite_smoke(tmp_path: Path) -> None:
    md_path, json_path = tmp_path / "results.md", tmp_path / "results.json"
    cmd = [sys.executable, "bench/suite.py", "--smoke", "--out", str(md_path)]
    proc = subprocess.run(
        [*cmd, "--json", str(json_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    md = md_path.read_text()
    assert "| # | scenario | ideal | fanflow |" in md, md
    for row in EXPECTED_ROWS:
        assert row in md, f"missing row {row!r} in\n{md}"
    assert "LangGraph" not in md.split("## Notes")[0], "peers must be skipped in smoke mode"
    assert "cores" in md and "Date:" in md

    data = json.loads(json_path.read_text())
    assert data["smoke"] is True
    assert set(data["systems"]) == {"fanflow"}
    assert data["systems"]["fanflow"]["status"] == "ready"
    scenarios, results = data["scenarios"], data["results"]
    assert len(scenarios) == 11
    for key, sc in scenarios.items():
        r = results[key]["fanflow"]
        assert r["status"] == "ok", (key, r)
        assert r["runs"] == 2 and 0 < r["min_s"] <= r["median_s"] <= r["max_s"] < 60, (key, r)
        if sc["ideal"]:
            # never faster than physically possible; loose upper bound (a loaded CI box)
            assert 0.95 <= r["ratio"] < 50, (key, r)
        if sc["per"]:
            assert 0 < r["us_per_unit"] < 100_000, (key, r)
    assert results["diamond"]["fanflow"]["extra"]["e_runs"] == 1
    assert results["fanout-32"]["fanflow"]["extra"]["join_runs"] == 1
    assert results["llm"]["fanflow"]["extra"]["mock"]["max_in_flight"] >= 2
    assert results["shell"]["fanflow"]["peak_rss_mb"] > 1
    assert results["startup"]["fanflow"]["peak_rss_mb"] > 1
