"""Resume planning on a real store: what is reused, what re-runs, and when a resume is refused."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from fanflow import events as ev
from fanflow.compile.compiled import compile_workflow
from fanflow.errors import EXIT_INVALID, WorkflowInvalid
from fanflow.events import Event
from fanflow.store.checkpoint import CheckpointWriter
from fanflow.store.resume import load_resume, plan_resume
from fanflow.store.runs import RunStore, UnknownRun


def code(node_id: str, src: str = "result = 1", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "code", "params": {"code": src}, **extra}


# a → b (batch over a.result) → c ;  a → d
BASE: dict[str, Any] = {
    "ir_version": "0.1.0",
    "nodes": [
        code("a", "result = list(range(8))"),
        code("b", "result = 2", batch={"items": "${a.result}"}),
        code("c", "result = 3"),
        code("d", "result = 4"),
    ],
    "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "a", "to": "d"}],
}


def record(store: RunStore, doc: dict[str, Any], path: str, events: list[tuple], inputs=None,
           close: bool = True) -> CheckpointWriter:  # fmt: skip
    """Store a run of `doc` made of (kind, node, item, data) events. An absolute `path` gets
    the document written to it, as a workflow file would be."""
    if Path(path).is_absolute():
        Path(path).write_text(json.dumps(doc))
    wf = compile_workflow(copy.deepcopy(doc))
    w = CheckpointWriter(store, workflow=wf, workflow_path=path, inputs=inputs or {})
    for kind, node, item, data in events:
        w.on_event(Event(kind, time.perf_counter(), node, item, data))
    if close:
        w.close()
    return w


def ok(node: str, outputs: dict[str, Any], action: str = "default") -> list[tuple]:
    return [
        (ev.NODE_STARTED, node, None, {}),
        (ev.NODE_FINISHED, node, None, {"status": "success", "action": action, "outputs": outputs}),
    ]


def failed(node: str, action: str | None = None) -> list[tuple]:
    return [
        (ev.NODE_STARTED, node, None, {}),
        (ev.NODE_FINISHED, node, None, {"status": "failed", "action": action, "outputs": {},
                                        "error": "boom"}),
    ]  # fmt: skip


def items(node: str, good: range, bad: list[int] = ()) -> list[tuple]:  # type: ignore[assignment]
    out = [(ev.NODE_STARTED, node, None, {"batch": 8})]
    out += [(ev.ITEM_FINISHED, node, i, {"status": "success", "result": {"r": i}}) for i in good]
    out += [(ev.ITEM_FINISHED, node, i, {"status": "failed", "error": "x"}) for i in bad]
    return out


END_FAILED = [(ev.RUN_FINISHED, None, None, {"status": "failed", "outputs": {}, "error": "b"})]


@pytest.fixture
def setup(tmp_path: Path):
    store = RunStore(tmp_path / "runs.db")
    path = tmp_path / "wf.json"

    def run(doc=BASE, events=None, inputs=None, close=True) -> CheckpointWriter:
        evs = events if events is not None else (
            ok("a", {"result": list(range(8))}) + ok("d", {"result": 4})
            + items("b", range(5), [5]) + failed("b") + END_FAILED
        )  # fmt: skip
        return record(store, doc, str(path), evs, inputs, close)

    def wf(doc=BASE):
        """The workflow file as edited after the run, loaded from disk."""
        path.write_text(json.dumps(doc))
        return compile_workflow(path)

    return store, run, wf


def changed(doc: dict[str, Any], node: str, src: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for n in doc["nodes"]:
        if n["id"] == node:
            n["params"]["code"] = src
    return doc


def test_unchanged_reuses_completed_nodes_and_items(setup) -> None:
    store, run, wf = setup
    w = run()
    plan = plan_resume(store, "last", wf(), {})
    assert plan.state.run_id == w.run_id
    assert set(plan.state.nodes) == {"a", "d"}
    assert plan.state.nodes["a"].outputs == {"result": list(range(8))}
    assert plan.state.nodes["a"].action == "default"
    assert plan.state.items == {"b": {i: {"r": i} for i in range(5)}}
    assert plan.rerun == ["b", "c"] and plan.partial_items == {"b": 5}
    # load_resume is the same decision, state only; by id and by prefix too
    assert load_resume(store, w.run_id[:15], wf(), {}).nodes.keys() == {"a", "d"}


def test_changed_node_downstream_of_unfinished_work_is_allowed(setup) -> None:
    store, run, wf = setup
    run()
    plan = plan_resume(store, "last", wf(changed(BASE, "c", "result = 33")), {})
    assert set(plan.state.nodes) == {"a", "d"} and plan.state.items["b"]
    assert any("c" in n for n in plan.notes)


def test_changed_completed_node_is_refused(setup) -> None:
    store, run, wf = setup
    run()
    with pytest.raises(WorkflowInvalid) as exc:
        load_resume(store, "last", wf(changed(BASE, "a", "result = [1]")), {})
    text = str(exc.value)
    assert exc.value.exit_code == EXIT_INVALID
    assert "'a'" in text and "fresh run" in text and "changed" in text


def test_changed_upstream_edge_of_completed_node(setup) -> None:
    store, run, wf = setup
    run()
    doc = copy.deepcopy(BASE)
    doc["nodes"].append(code("e"))
    doc["edges"].append({"from": "e", "to": "d"})  # d (completed) gets a new upstream
    # e never ran, so d cannot be reused anyway: it runs again after e; nothing stale is kept
    plan = plan_resume(store, "last", wf(doc), {})
    assert set(plan.state.nodes) == {"a"} and "d" in plan.rerun and "e" in plan.rerun
    # ...while an edge change into a node that would be reused is refused: a → d now fires
    # only on action "other", so d's stored run may never have happened under this workflow.
    doc2 = copy.deepcopy(BASE)
    doc2["edges"][2]["action"] = "other"
    with pytest.raises(WorkflowInvalid, match="node\\(s\\) 'd' changed"):
        load_resume(store, "last", wf(doc2), {})


def test_changed_partial_batch_discards_its_items(setup) -> None:
    store, run, wf = setup
    run()
    plan = plan_resume(store, "last", wf(changed(BASE, "b", "result = 22")), {})
    assert set(plan.state.nodes) == {"a", "d"} and plan.state.items == {}
    assert any("discarded" in n for n in plan.notes)


def test_changed_inputs_are_refused(setup) -> None:
    store, run, wf = setup
    run(inputs={"n": 3})
    assert plan_resume(store, "last", wf(), {"n": 3}).state.nodes
    with pytest.raises(WorkflowInvalid, match=r"inputs changed \(n\)"):
        load_resume(store, "last", wf(), {"n": 4})
    with pytest.raises(WorkflowInvalid, match=r"inputs changed \(m, n\)"):
        load_resume(store, "last", wf(), {"m": 1})


def test_a_live_run_cannot_be_resumed(setup) -> None:
    store, run, wf = setup
    w = run(close=False)  # still "running" in this (live) process
    with pytest.raises(WorkflowInvalid, match="still running"):
        load_resume(store, w.run_id, wf(), {})
    w.close()
    assert load_resume(store, w.run_id, wf(), {}).run_id == w.run_id


def test_last_means_last_run_of_this_workflow_file(setup, tmp_path: Path) -> None:
    store, run, wf = setup
    mine = run()
    other = tmp_path / "other.json"
    other.write_text("{}")
    record(store, BASE, str(other), ok("a", {"result": []}) + END_FAILED)
    assert load_resume(store, "last", wf(), {}).run_id == mine.run_id
    with pytest.raises(UnknownRun):
        load_resume(store, "last", compile_workflow(copy.deepcopy(BASE)), {},
                    workflow_path=tmp_path / "never-ran.json")  # fmt: skip


def test_completed_node_after_unfinished_upstream_reruns(setup) -> None:
    # a fails but its error edge runs h; resuming re-runs a, so h's stored outputs are stale
    store, _run, _wf = setup
    doc = {
        "ir_version": "0.1.0",
        "nodes": [code("a"), code("h"), code("z")],
        "edges": [{"from": "a", "to": "h", "action": "error"}, {"from": "a", "to": "z"}],
    }
    w = record(store, doc, "flow.json", failed("a", "error") + ok("h", {"result": 1}) + END_FAILED)
    plan = plan_resume(store, w.run_id, compile_workflow(copy.deepcopy(doc)), {}, "flow.json")
    assert plan.state.nodes == {}
    assert any("'h'" in n and "upstream" in n for n in plan.notes)


def test_skipped_branch_settles_an_or_join(setup) -> None:
    store, _run, _wf = setup
    doc = {
        "ir_version": "0.1.0",
        "nodes": [code("check"), code("yes"), code("no"), code("join"), code("last")],
        "edges": [
            {"from": "check", "to": "yes", "action": "yes"},
            {"from": "check", "to": "no", "action": "no"},
            {"from": "yes", "to": "join"},
            {"from": "no", "to": "join"},
            {"from": "join", "to": "last"},
        ],
    }
    evs = (
        ok("check", {"result": 1}, action="yes") + ok("yes", {"result": 2})
        + [(ev.NODE_SKIPPED, "no", None, {"reason": "no incoming edge fired"})]
        + ok("join", {"result": 3}) + failed("last") + END_FAILED
    )  # fmt: skip
    w = record(store, doc, "flow.json", evs)
    state = load_resume(store, w.run_id, compile_workflow(copy.deepcopy(doc)), {}, "flow.json")
    assert set(state.nodes) == {"check", "yes", "join"}
    assert state.nodes["check"].action == "yes"


def test_a_loop_is_restored_only_as_a_whole(setup) -> None:
    store, _run, _wf = setup
    doc = {
        "ir_version": "0.1.0",
        "nodes": [code("draft"), code("review"), code("publish")],
        "edges": [
            {"from": "draft", "to": "review"},
            {"from": "review", "to": "draft", "action": "revise"},
            {"from": "review", "to": "publish", "action": "ok"},
        ],
    }
    wf = compile_workflow(copy.deepcopy(doc))
    # killed while the second visit of draft was running: the loop did not finish
    evs = ok("draft", {"v": 1}) + ok("review", {"v": 1}, "revise") + ok("draft", {"v": 2})[:1]
    w = record(store, doc, "loop.json", evs + END_FAILED)
    assert load_resume(store, w.run_id, wf, {}, "loop.json").nodes == {}
    # finished loop, publish failed: the loop is replayed, publish runs
    evs = ok("draft", {"v": 2}) + ok("review", {"v": 2}, "ok") + failed("publish")
    w = record(store, doc, "loop.json", evs + END_FAILED)
    state = load_resume(store, w.run_id, wf, {}, "loop.json")
    assert set(state.nodes) == {"draft", "review"} and state.nodes["review"].action == "ok"


def test_unstorable_outputs_rerun(setup) -> None:
    store, _run, _wf = setup
    doc = {"ir_version": "0.1.0", "nodes": [code("a"), code("b")]}
    evs = ok("a", {"s": {1, 2}}) + failed("b") + END_FAILED
    w = record(store, doc, "flow.json", evs)
    plan = plan_resume(store, w.run_id, compile_workflow(copy.deepcopy(doc)), {}, "flow.json")
    assert plan.state.nodes == {} and any("'a' re-runs" in n for n in plan.notes)
