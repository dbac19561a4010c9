"""Observability through the real CLI: `fanflow run --trace/--timeline` on shell `sleep` nodes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

FANFLOW = [sys.executable, "-m", "fanflow"]


def sh(node_id: str, command: str, **extra) -> dict:
    return {"id": node_id, "type": "shell", "params": {"command": command}, **extra}


DIAMOND = {
    "ir_version": "0.1.0",
    "nodes": [
        sh("fetch", "sleep 0.1; echo ok"),
        sh("left", "sleep 0.6; echo left"),
        sh("right", "sleep 0.6; echo right"),
        sh("join", "echo ${left.stdout} ${right.stdout}"),
    ],
    "edges": [
        {"from": "fetch", "to": "left"},
        {"from": "fetch", "to": "right"},
        {"from": "left", "to": "join"},
        {"from": "right", "to": "join"},
    ],
    "outputs": {"joined": {"source": "${join.stdout}"}},
}

# The demo: fan-out to a batch and two branches, joined by a report.
DEMO = {
    "ir_version": "0.1.0",
    "nodes": [
        sh("fetch", "sleep 0.2; echo '[1,2,3,4,5,6,7,8]'"),
        sh(
            "work",
            "sleep 0.3; echo item ${item}",
            batch={"items": "${fetch.stdout}", "parallel": True, "max_concurrent": 3},
        ),
        sh("analyze", "sleep 0.7; echo analysis"),
        sh("visualize", "sleep 0.4; echo chart"),
        sh("report", "sleep 0.1; echo ${analyze.stdout} ${visualize.stdout} ${work.count}"),
    ],
    "edges": [
        {"from": "fetch", "to": "work"},
        {"from": "fetch", "to": "analyze"},
        {"from": "fetch", "to": "visualize"},
        {"from": "work", "to": "report"},
        {"from": "analyze", "to": "report"},
        {"from": "visualize", "to": "report"},
    ],
}


def run_cli(tmp_path: Path, wf: dict, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "wf.json").write_text(json.dumps(wf))
    return subprocess.run(
        [*FANFLOW, "run", "wf.json", "--no-checkpoint", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TERM": "xterm"},  # stderr is a pipe: still the plain-line path
    )


def spans(trace: dict) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def test_trace_of_a_diamond_shows_the_parallel_branches_overlapping(tmp_path: Path):
    res = run_cli(tmp_path, DIAMOND, "--trace", "t.json", "--output-format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["outputs"] == {"joined": "left right"}  # stdout: data only
    trace = json.loads((tmp_path / "t.json").read_text())
    by_name = {}
    for s in spans(trace):
        assert s["name"] not in by_name, "one span per node run"
        by_name[s["name"]] = s
    assert set(by_name) == {"fetch", "left", "right", "join"}
    left, right = by_name["left"], by_name["right"]
    overlap = min(left["ts"] + left["dur"], right["ts"] + right["dur"]) - max(
        left["ts"], right["ts"]
    )
    assert overlap > 300_000  # µs: two 0.6 s sleeps side by side, not one after the other
    assert left["tid"] != right["tid"]
    fetch, join = by_name["fetch"], by_name["join"]
    assert fetch["ts"] + fetch["dur"] <= min(left["ts"], right["ts"])
    assert join["ts"] >= max(left["ts"] + left["dur"], right["ts"] + right["dur"])
    # summary on stderr agrees: parallel branches make busy time exceed wall time
    assert "critical path" in res.stderr and "parallelism" in res.stderr


def test_batch_items_get_one_span_each_in_their_own_lanes(tmp_path: Path):
    res = run_cli(tmp_path, DEMO, "--trace", "t.json", "--timeline", "t.html", "-q")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # -q: no progress, no summary
    trace = json.loads((tmp_path / "t.json").read_text())
    items = [s for s in spans(trace) if s["cat"] == "item"]
    assert sorted(s["args"]["item"] for s in items) == list(range(8))
    names = {
        e["tid"]: e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert {names[s["tid"]] for s in items} == {"work items 1", "work items 2", "work items 3"}
    work = next(s for s in spans(trace) if s["name"] == "work")
    for s in items:
        assert work["ts"] <= s["ts"] and s["ts"] + s["dur"] <= work["ts"] + work["dur"] + 1
    html = (tmp_path / "t.html").read_text()
    assert "work[7]" in html and "<script" not in html


def test_non_tty_progress_arrives_while_the_run_is_going(tmp_path: Path):
    wf = {
        "ir_version": "0.1.0",
        "nodes": [sh("first", "echo go"), sh("wait", "sleep 2"), sh("last", "echo done")],
    }
    (tmp_path / "wf.json").write_text(json.dumps(wf))
    t_start = time.monotonic()
    proc = subprocess.Popen(
        [*FANFLOW, "run", "wf.json", "--no-checkpoint"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    arrivals: list[tuple[float, str]] = []
    assert proc.stderr is not None
    for line in proc.stderr:  # line by line, as the child writes them
        arrivals.append((time.monotonic(), line.rstrip("\n")))
    proc.wait(timeout=30)
    t_exit = time.monotonic()
    assert proc.returncode == 0
    lines = [text for _, text in arrivals]
    assert lines[0] == "▶ first" and lines[1].startswith("✓ first "), lines
    assert lines[2] == "▶ wait" and lines[3].startswith("✓ wait 2."), lines
    wait_started = next(t for t, text in arrivals if text == "▶ wait")
    # The start line came while `sleep 2` was still running, not with everything at the end.
    assert t_exit - wait_started > 1.0, (wait_started - t_start, t_exit - t_start)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (manual check)")
def test_timeline_renders_in_headless_chromium(tmp_path: Path):
    res = run_cli(tmp_path, DEMO, "--timeline", "t.html", "-q")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "t.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                _chromium(),  # type: ignore[list-item]
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={png}",
                "--window-size=1200,520",
                (tmp_path / "t.html").as_uri(),
            ],
            capture_output=True,
            timeout=90,
        )
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000  # a blank page is ~3 KB; bars, labels and axis are more
    if os.environ.get("FANFLOW_KEEP_SCREENSHOT"):
        shutil.copy(png, os.environ["FANFLOW_KEEP_SCREENSHOT"])
