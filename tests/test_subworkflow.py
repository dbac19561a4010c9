"""The `workflow` node (issue 15): composition, the per-item pipeline, one budget, failure and
cancellation across the boundary, validation at the parent's node, resume inside children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import fanflow
from conftest import FANFLOW, Events, run_cli, wf


def _child(path: Path, nodes: list[dict], edges: list | None = None, **extra: Any) -> Path:
    path.write_text(json.dumps(wf(nodes, edges, **extra)))
    return path


def _double_inc(tmp_path: Path) -> Path:
    return _child(
        tmp_path / "lib" / "child.json",
        [
            {"id": "double", "type": "code", "params": {"code": "result = x * 2", "inputs": {"x": "${x}"}}},
            {"id": "inc", "type": "code", "params": {"code": "result = y + 1", "inputs": {"y": "${double.result}"}}},
        ],
        [("double", "inc")],
        inputs={"x": {"type": "number", "required": True}},
        outputs={"value": {"source": "${inc.result}"}},
    )  # fmt: skip


def test_child_by_path_relative_to_the_calling_file_inputs_and_outputs(tmp_path, write_wf):
    (tmp_path / "lib").mkdir()
    _double_inc(tmp_path)
    parent = write_wf(
        wf(
            [
                {"id": "one", "type": "workflow", "params": {"workflow": "lib/child.json", "inputs": {"x": 10}}},
                {"id": "each", "type": "workflow", "params": {"workflow": "lib/child.json", "inputs": {"x": "${item}"}},
                 "batch": {"items": [1, 2, 3], "parallel": True}},
            ],
            [("one", "each")],
            outputs={"one": {"source": "${one.value}"}, "all": {"source": "${each.results}"}},
        )
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_cli("run", str(parent), "--output-format", "json", cwd=elsewhere)
    assert r.code == 0, r.stderr
    out = r.json
    assert out["outputs"] == {"one": 21, "all": [{"value": 3}, {"value": 5}, {"value": 7}]}
    assert set(out["nodes"]) == {"one", "each"}  # the contract lists the workflow's own nodes


def test_inline_object_inline_pipeline_and_saved_name(tmp_path, write_wf):
    saved = tmp_path / ".fanflow-home" / "workflows"
    saved.mkdir(parents=True)
    _child(
        saved / "shout.json",
        [{"id": "up", "type": "code", "params": {"code": "result = s.upper()", "inputs": {"s": "${s}"}}}],
        inputs={"s": {"type": "string", "required": True}},
        outputs={"text": {"source": "${up.result}"}},
    )  # fmt: skip
    inline = {
        "inputs": {"n": {"type": "number", "required": True}},
        "nodes": [{"id": "sq", "type": "code", "params": {"code": "result = n * n", "inputs": {"n": "${n}"}}}],
        "outputs": {"sq": {"source": "${sq.result}"}},
    }  # fmt: skip
    pipeline = [
        {"id": "a", "type": "code", "params": {"code": "result = 'a'"}},
        {"id": "b", "type": "code", "params": {"code": "result = prev + 'b'", "inputs": {"prev": "${a.result}"}}},
    ]  # fmt: skip
    parent = write_wf(
        wf(
            [
                {"id": "named", "type": "workflow", "params": {"workflow": "shout", "inputs": {"s": "hi"}}},
                {"id": "obj", "type": "workflow", "params": {"workflow": inline, "inputs": {"n": 7}}},
                {"id": "pipe", "type": "workflow", "params": {"workflow": pipeline}},
            ],
            [],
            outputs={
                "named": {"source": "${named.text}"},
                "obj": {"source": "${obj.sq}"},
                "pipe": {"source": "${pipe.b.result}"},  # no declared outputs: every node's
            },
        )
    )  # fmt: skip
    r = run_cli("run", str(parent), "--output-format", "json")
    assert r.code == 0, r.stderr
    assert r.json["outputs"] == {"named": "HI", "obj": 49, "pipe": "ab"}


def test_batch_over_a_sub_workflow_has_no_stage_barrier(tmp_path, write_wf):
    # Item 0's first stage is slow; item 1 runs its whole three-stage chain meanwhile.
    _child(
        tmp_path / "stages.json",
        [
            {"id": "s1", "type": "shell", "params": {"command": "sleep ${d[0]}"}},
            {"id": "s2", "type": "shell", "params": {"command": "sleep ${d[1]}"}},
            {"id": "s3", "type": "shell", "params": {"command": "sleep ${d[2]}; echo ${d[0]}"}},
        ],
        [("s1", "s2"), ("s2", "s3")],
        inputs={"d": {"type": "array", "required": True}},
        outputs={"out": {"source": "${s3.stdout}"}},
    )  # fmt: skip
    parent = write_wf(
        wf(
            [{"id": "each", "type": "workflow",
              "params": {"workflow": "stages.json", "inputs": {"d": "${item}"}},
              "batch": {"items": [[1.0, 0.05, 0.05], [0.05, 0.05, 0.05]], "parallel": True}}],
            outputs={"out": {"source": "${each.results}"}},
        )
    )  # fmt: skip
    events = Events()
    result = fanflow.run(parent, listeners=[events], checkpoint=False)
    assert result.ok, result.error
    assert result.outputs["out"] == [{"out": "1.0"}, {"out": "0.05"}]  # item order kept
    item1_done = events.span("each[1]/s3")[1]
    item0_s2_start = events.span("each[0]/s2")[0]
    assert item1_done < item0_s2_start  # item 1 finished before item 0 left its first stage


def _deep(tmp_path: Path) -> Path:
    _child(
        tmp_path / "l3.json",
        [{"id": "s", "type": "shell", "params": {"command": "echo $((${v} * 3))"}}],
        inputs={"v": {"type": "number", "required": True}},
        outputs={"r": {"source": "${s.stdout}"}},
    )  # fmt: skip
    _child(
        tmp_path / "l2.json",
        [
            {"id": "deeper", "type": "workflow", "params": {"workflow": "l3.json", "inputs": {"v": "${v}"}},
             "batch": {"items": [1, 2], "parallel": True}},
            {"id": "sum", "type": "code",
             "params": {"code": "result = sum(int(r['r']) for r in rs) + v", "inputs": {"rs": "${deeper.results}", "v": "${v}"}}},
        ],
        [("deeper", "sum")],
        inputs={"v": {"type": "number", "required": True}},
        outputs={"r": {"source": "${sum.result}"}},
    )  # fmt: skip
    return _child(
        tmp_path / "l1.json",
        [{"id": "top", "type": "workflow", "params": {"workflow": "l2.json", "inputs": {"v": "${item}"}},
          "batch": {"items": [1, 2, 3], "parallel": True}}],
        outputs={"r": {"source": "${top.results}"}},
    )  # fmt: skip


def test_nesting_three_deep_at_max_concurrent_1_does_not_deadlock(tmp_path):
    top = _deep(tmp_path)
    r = run_cli("run", str(top), "--max-concurrent", "1", "--output-format", "json", timeout=30)
    assert r.code == 0, r.stderr
    assert r.json["outputs"]["r"] == [{"r": 7}, {"r": 14}, {"r": 21}]  # 3v + 3v + v


def test_children_draw_from_the_one_global_budget(tmp_path, write_wf):
    _child(
        tmp_path / "nap.json",
        [{"id": "nap", "type": "shell", "params": {"command": "sleep 0.2"}},
         {"id": "nap2", "type": "shell", "params": {"command": "sleep 0.2"}}],
        [],
    )  # fmt: skip
    parent = write_wf(
        wf(
            [{"id": "each", "type": "workflow", "params": {"workflow": "nap.json"},
              "batch": {"items": list(range(6)), "parallel": True}}],
        )
    )  # fmt: skip
    events = Events()
    result = fanflow.run(parent, listeners=[events], max_concurrent=2, checkpoint=False)
    assert result.ok, result.error
    running, peak = 0, 0
    for e in events.events:
        if e.node and "/" in e.node and e.kind in ("node_started", "node_finished"):
            running += 1 if e.kind == "node_started" else -1
            peak = max(peak, running)
    assert peak == 2  # leaves of different items overlapped, never more than the budget


def test_a_failure_inside_a_child_fails_the_parent_and_cancels_its_other_work(tmp_path, write_wf):
    _child(
        tmp_path / "bad.json",
        [{"id": "boom", "type": "shell", "params": {"command": "sleep 0.2; exit 3"}}],
    )
    parent = write_wf(
        wf(
            [{"id": "sub", "type": "workflow", "params": {"workflow": "bad.json"}},
             {"id": "slow", "type": "shell", "params": {"command": "sleep 20"}},
             {"id": "after", "type": "code", "params": {"code": "result = 1"}}],
            [("sub", "after")],
        )
    )  # fmt: skip
    began = time.monotonic()
    r = run_cli("run", str(parent), "--output-format", "json")
    assert time.monotonic() - began < 10  # `slow` was cancelled, not waited for
    assert r.code == 1
    out = r.json
    assert out["status"] == "failed"
    assert "boom" in out["error"] and "exit" in out["error"].lower()
    assert out["nodes"]["sub"]["status"] == "failed"
    assert out["nodes"]["slow"]["status"] == "cancelled"


def test_batch_continue_policy_applies_to_whole_items(tmp_path, write_wf):
    _child(
        tmp_path / "maybe.json",
        [{"id": "check", "type": "code",
          "params": {"code": "assert n != 2, 'two is bad'\nresult = n", "inputs": {"n": "${n}"}}}],
        inputs={"n": {"type": "number", "required": True}},
        outputs={"n": {"source": "${check.result}"}},
    )  # fmt: skip
    parent = write_wf(
        wf(
            [{"id": "each", "type": "workflow", "params": {"workflow": "maybe.json", "inputs": {"n": "${item}"}},
              "batch": {"items": [1, 2, 3], "error_handling": "continue"}}],
            outputs={"r": {"source": "${each}"}},
        )
    )  # fmt: skip
    r = run_cli("run", str(parent), "--output-format", "json")
    assert r.code == 0, r.stderr
    batch = r.json["outputs"]["r"]
    assert batch["results"] == [{"n": 1}, None, {"n": 3}]
    assert batch["errors"][0]["index"] == 1 and "two is bad" in batch["errors"][0]["error"]


def test_interrupting_the_parent_kills_the_childs_processes(tmp_path, write_wf):
    pidfile = tmp_path / "pid"
    _child(
        tmp_path / "hang.json",
        [{"id": "hang", "type": "shell", "params": {"command": f"echo $$ > {pidfile}; exec sleep 30"}}],
    )  # fmt: skip
    parent = write_wf(wf([{"id": "sub", "type": "workflow", "params": {"workflow": "hang.json"}}]))
    proc = subprocess.Popen(
        [*FANFLOW, "run", str(parent), "--output-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "the child's shell never started"
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert json.loads(out)["status"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # the group kill is immediate; allow a moment for reaping
            os.kill(pid, 0)
            time.sleep(0.05)


def test_child_problems_are_reported_at_the_parents_node_before_anything_runs(tmp_path, write_wf):
    _child(
        tmp_path / "needs.json",
        [{"id": "s", "type": "shel", "params": {}}],
        inputs={"v": {"type": "number", "required": True}},
    )
    marker = tmp_path / "ran"
    parent = write_wf(
        wf(
            [{"id": "first", "type": "shell", "params": {"command": f"touch {marker}"}},
             {"id": "typo", "type": "workflow", "params": {"workflow": "needs.json", "inputs": {"w": 1}}},
             {"id": "gone", "type": "workflow", "params": {"workflow": "missing.json"}}],
            [],
        )
    )  # fmt: skip
    r = run_cli("run", str(parent), "--output-format", "json")
    assert r.code == 2
    assert not marker.exists()
    problems = r.json["problems"]
    by = {(p["node"], p["field"]): p for p in problems}
    child = by[("typo", "nodes[1].params.workflow")]
    assert "needs.json" in child["message"] and "unknown node type 'shel'" in child["message"]
    assert "shell" in child["hint"]
    assert "no input 'w'" in by[("typo", "nodes[1].params.inputs.w")]["message"]
    assert "needs input 'v'" in by[("typo", "nodes[1].params.inputs")]["message"]
    assert "not found" in by[("gone", "nodes[2].params.workflow")]["message"]
    assert all(p["file"] == str(parent) for p in problems)


def test_a_cycle_of_sub_workflows_is_refused_statically(tmp_path):
    _child(
        tmp_path / "a.json", [{"id": "tob", "type": "workflow", "params": {"workflow": "b.json"}}]
    )
    _child(
        tmp_path / "b.json", [{"id": "toa", "type": "workflow", "params": {"workflow": "a.json"}}]
    )
    r = run_cli("validate", str(tmp_path / "a.json"))
    assert r.code == 2
    assert "cycle: a.json → b.json → a.json" in r.stderr


def test_recursion_through_a_template_name_stops_at_max_depth(tmp_path):
    me = _child(
        tmp_path / "me.json",
        [{"id": "again", "type": "workflow",
          "params": {"workflow": "${name}", "inputs": {"name": "${name}"}, "max_depth": 4}}],
        inputs={"name": {"type": "string", "required": True}},
    )  # fmt: skip
    r = run_cli("run", str(me), "name=me.json", "--output-format", "json", timeout=30)
    assert r.code == 1
    assert "max_depth 4" in r.json["error"]


def test_a_compiled_workflow_is_a_node_from_python(tmp_path):
    child = fanflow.compile_workflow(
        wf(
            [{"id": "sq", "type": "code", "params": {"code": "result = n * n", "inputs": {"n": "${n}"}}}],
            inputs={"n": {"type": "number", "required": True}},
            outputs={"sq": {"source": "${sq.result}"}},
        )
    )  # fmt: skip
    parent = wf(
        [{"id": "each", "type": "workflow", "params": {"workflow": child, "inputs": {"n": "${item}"}},
          "batch": {"items": [2, 3]}}],
        outputs={"r": {"source": "${each.results}"}},
    )  # fmt: skip
    result = fanflow.run(parent, checkpoint=False)
    assert result.ok, result.error
    assert result.outputs["r"] == [{"sq": 4}, {"sq": 9}]


@pytest.mark.slow
def test_resume_after_a_kill_mid_item_reruns_only_unfinished_child_nodes(tmp_path, write_wf):
    log = tmp_path / "log"
    gate = tmp_path / "gate"
    # Stage 1 logs and finishes at once; stage 2 of item 1 waits for the gate (we kill there).
    _child(
        tmp_path / "two.json",
        [
            {"id": "s1", "type": "shell", "params": {"command": f"echo s1-${{i}} >> {log}; echo ${{i}}"}},
            {"id": "s2", "type": "shell", "params": {
                "command": f"if [ ${{i}} = 1 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; fi; "
                           f"echo s2-${{i}} >> {log}; echo done-${{i}}"}},
        ],
        [("s1", "s2")],
        inputs={"i": {"type": "number", "required": True}},
        outputs={"out": {"source": "${s2.stdout}"}},
    )  # fmt: skip
    parent = write_wf(
        wf(
            [{"id": "each", "type": "workflow", "params": {"workflow": "two.json", "inputs": {"i": "${item}"}},
              "batch": {"items": [0, 1, 2], "parallel": True}}],
            outputs={"r": {"source": "${each.results}"}},
        )
    )  # fmt: skip
    proc = subprocess.Popen([*FANFLOW, "run", str(parent), "-q"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while log.read_text().count("\n") < 5 if log.exists() else True:  # all but s2-1
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.05)
        time.sleep(1.0)  # let the checkpoint writer flush what finished
        proc.kill()
        proc.wait(10)
    finally:
        proc.kill()
    assert sorted(log.read_text().split()) == ["s1-0", "s1-1", "s1-2", "s2-0", "s2-2"]
    gate.touch()
    r = run_cli("run", str(parent), "--resume", "last", "--output-format", "json")
    assert r.code == 0, r.stderr
    assert r.json["outputs"]["r"] == [{"out": "done-0"}, {"out": "done-1"}, {"out": "done-2"}]
    # Item 1's first stage was not run again: only its unfinished second stage ran.
    assert sorted(log.read_text().split()) == ["s1-0", "s1-1", "s1-2", "s2-0", "s2-1", "s2-2"]


def test_progress_is_compact_and_the_summary_counts_children_apart(tmp_path):
    top = _deep(tmp_path)
    r = run_cli("run", str(top))
    assert r.code == 0, r.stderr
    lines = r.stderr.splitlines()
    assert not [ln for ln in lines if ln[2:].startswith("top[")]  # no lines of nested nodes
    assert any(ln.startswith("✓ top ") for ln in lines)
    assert "1 nodes (1 success, +12 in sub-workflows)" in r.stderr


def test_trace_puts_each_item_pipeline_in_its_own_lane_nested_under_the_item(tmp_path):
    top = _deep(tmp_path)
    trace = tmp_path / "t.json"
    r = run_cli("run", str(top), "--trace", str(trace), "-q")
    assert r.code == 0, r.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    lane = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    spans = {e["name"]: e for e in events if e["ph"] == "X"}
    for i in range(3):
        item, chain = spans[f"top[{i}]"], [spans[f"top[{i}]/deeper"], spans[f"top[{i}]/sum"]]
        assert lane[item["tid"]] == f"top[{i}]"
        for child in chain:  # same lane, inside the item's span: Perfetto nests them
            assert child["tid"] == item["tid"]
            assert (
                item["ts"] <= child["ts"] and child["ts"] + child["dur"] <= item["ts"] + item["dur"]
            )
    assert lane[spans["top[1]/deeper[0]/s"]["tid"]] == "top[1]/deeper[0]"


def test_plan_shows_the_child_under_its_node_and_the_summary_descends(tmp_path):
    top = _deep(tmp_path)
    r = run_cli("plan", str(top))
    assert r.code == 0, r.stderr
    assert "sub-workflow of top: " in r.stdout and "sub-workflow of deeper: " in r.stdout
    assert "top [runs l2.json] (batch: 3 items" in r.stdout
    plan = run_cli("plan", str(top), "--output-format", "json").json
    child = plan["nodes"][0]["workflow"]
    assert [n["id"] for n in child["nodes"]] == ["deeper", "sum"]
    assert child["nodes"][0]["workflow"]["nodes"][0]["id"] == "s"
    result = fanflow.run(top, summary=True, checkpoint=False)
    assert result.ok
    step = result.summary["critical_path"][0]
    assert step["node"] == "top"
    assert [v["node"].split("/")[-1] for v in step["via"]] == ["deeper", "sum"]
