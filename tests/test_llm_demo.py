"""The offline LLM demo (examples/demo-llm.json) runs through the CLI with no keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_llm_runs_offline_with_a_timeline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env["FANFLOW_LIMITS"] = ""
    out = tmp_path / "out"
    res = run_cli(
        "run", str(ROOT / "examples" / "demo-llm.json"), f"out={out}", "--output-format", "json",
        "--timeline", str(out / "timeline.html"), "--no-checkpoint", cwd=ROOT, env=env,
    )  # fmt: skip
    assert res.code == 0, res.stderr
    data = res.json
    docs = len(list((ROOT / "docs").glob("*.md")))
    assert data["outputs"]["documents"] == docs
    themes = data["outputs"]["themes"]
    assert 1 <= len(themes) <= 4
    report = (out / "llm-report.md").read_text()
    assert "## Themes" in report and all(t in report for t in themes)
    assert (out / "timeline.html").stat().st_size > 0
    llm = data["summary"]["llm"]
    assert llm["calls"] == docs + 2 + len(themes)  # summarize batch, two analyses, explain batch
    assert llm["cost_unknown"] == [] and llm["cost_usd"] == 0.0
