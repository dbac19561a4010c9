"""The rebuilt core (issue 11): each finding of the review, reproduced, plus the compiled workflow.

Behaviour is observed through events and real subprocesses, never by trusting the code.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

import pytest

import fanflow
from conftest import Events
from fanflow import events as ev
from fanflow.events import Event


def wf(nodes: list[dict[str, Any]], edges: list[dict[str, Any]] | None = None, **extra: Any):
    doc: dict[str, Any] = {"ir_version": "0.1.0", "nodes": nodes, **extra}
    if edges is not None:
        doc["edges"] = edges
    return doc


def shell(node_id: str, command: str) -> dict[str, Any]:
    return {"id": node_id, "type": "shell", "params": {"command": command}}


def edges(*pairs: str) -> list[dict[str, str]]:
    return [{"from": a, "to": b} for a, b in (p.split(">") for p in pairs)]


# --- a bug outside any node ends the run; it never hangs ------------------------------------


class Exploding:
    def __init__(self, on: str) -> None:
        self.on = on
        self.closed = False

    def on_event(self, event: Event) -> None:
        if event.kind == ev.NODE_FINISHED and event.node == self.on:
            raise RuntimeError("listener bug")

    def close(self) -> None:
        self.closed = True


@pytest.mark.timeout(30)
def test_listener_that_raises_ends_the_run_and_kills_running_work(tmp_path: Path) -> None:
    marker = tmp_path / "late"
    doc = wf(
        [
            shell("start", "true"),
            shell("quick", "sleep 0.2"),
            shell("slow", f"sleep 5; touch {marker}"),
        ],
        edges=edges("start>quick", "start>slow"),
    )
    listener = Exploding(on="quick")
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="listener bug"):
        fanflow.run(doc, listeners=[listener])
    assert time.perf_counter() - t0 < 4  # did not wait for `slow`, let alone hang
    assert listener.closed  # listeners are closed even when the run raises
    time.sleep(5.5)
    assert not marker.exists()  # `slow`'s process group was killed, not orphaned


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("kind", "on"),
    [
        (ev.NODE_STARTED, "quick"),  # emitted inside the node's own failure handling
        (ev.ITEM_FINISHED, "each"),  # a batch item's event
        (ev.NODE_FINISHED, "child/inner"),  # a node inside a sub-workflow
    ],
)
def test_listener_bug_anywhere_ends_the_run_not_as_a_node_failure(kind: str, on: str) -> None:
    class Raises:
        def on_event(self, event: Event) -> None:
            if event.kind == kind and event.node == on:
                raise RuntimeError("listener bug")

        def close(self) -> None:
            pass

    doc = wf(
        [
            shell("quick", "true"),
            {"id": "each", "type": "shell", "params": {"command": "echo ${item}"},
             "batch": {"items": [1, 2, 3]}},
            {"id": "child", "type": "workflow",
             "params": {"workflow": {"nodes": [shell("inner", "echo in")]}}},
        ],
        edges=edges("quick>each", "each>child"),
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="listener bug"):
        fanflow.run(doc, listeners=[Raises()])


# --- a race cancels only the upstream work nothing else needs ---------------------------------


def race_doc(tmp_path: Path) -> dict[str, Any]:
    return wf(
        [
            shell("fast", "echo fast"),
            shell("slow", "sleep 0.5; echo slow"),
            shell("lonely", f"sleep 3; touch {tmp_path / 'lonely-finished'}; echo lonely"),
            {
                "id": "pick",
                "type": "merge",
                "params": {
                    "strategy": "first",
                    "inputs": ["${fast.stdout}", "${slow.stdout}", "${lonely.stdout}"],
                },
            },
            {
                "id": "audit",
                "type": "code",
                "params": {"code": "result = 'saw ' + s", "inputs": {"s": "${slow.stdout}"}},
            },
        ],
        edges=edges("fast>pick", "slow>pick", "lonely>pick", "slow>audit"),
        outputs={"winner": {"source": "${pick.winner}"}, "audit": {"source": "${audit.result}"}},
    )


@pytest.mark.timeout(30)
def test_race_keeps_upstream_work_another_node_needs(tmp_path: Path) -> None:
    result = fanflow.run(race_doc(tmp_path))
    assert result.status == "success", result.error
    assert result.outputs == {"winner": "fast", "audit": "saw slow"}
    assert result.nodes["slow"].status == "success"  # needed by audit: not cancelled
    assert result.nodes["audit"].status == "success"
    assert result.nodes["lonely"].status == "cancelled"  # only the race needed it
    time.sleep(3.2)
    assert not (tmp_path / "lonely-finished").exists()  # and its process really stopped


# --- a leaf waiting for a resource limit holds no global slot ---------------------------------


@pytest.mark.timeout(30)
def test_waiting_for_a_limit_does_not_hold_a_budget_slot() -> None:
    doc = wf(
        [
            shell("s1", "sleep 0.6"),
            shell("s2", "sleep 0.6"),
            shell("s3", "sleep 0.6"),
            {"id": "quick", "type": "code", "params": {"code": "result = 1"}},
            {"id": "start", "type": "code", "params": {"code": "result = 0"}},
        ],
        edges=edges("start>s1", "start>s2", "start>s3", "start>quick"),
        limits={"node:shell": {"concurrency": 1}},
    )
    seen = Events()
    result = fanflow.run(doc, max_concurrent=2, listeners=[seen])
    assert result.ok, result.error
    # s2 and s3 queue on node:shell; the code node must not queue behind them for a slot.
    first_shell_done = min(seen.t(ev.NODE_FINISHED, s) for s in ("s1", "s2", "s3"))
    assert seen.t(ev.NODE_FINISHED, "quick") < first_shell_done


# --- spans start when the work starts ----------------------------------------------------------


@pytest.mark.timeout(60)
def test_trace_in_flight_never_exceeds_the_budget(tmp_path: Path) -> None:
    doc = wf(
        [
            {"id": "items", "type": "code", "params": {"code": "result = list(range(20))"}},
            {
                "id": "work",
                "type": "shell",
                "params": {"command": "sleep 0.1"},
                "batch": {"items": "${items.result}", "parallel": True, "max_concurrent": 10},
            },
        ],
        edges=edges("items>work"),
    )
    trace = tmp_path / "t.json"
    result = fanflow.run(doc, max_concurrent=5, trace=trace)
    assert result.ok, result.error
    events = json.loads(trace.read_text())["traceEvents"]
    levels = [e["args"]["in_flight"] for e in events if e.get("name") == "in_flight"]
    assert max(levels) == 5  # the budget binds: 5 in flight, not the batch's 10
    items = [e for e in events if e.get("cat") == "item"]
    assert len(items) == 20
    # No instant has more than 5 item spans open.
    points = sorted([(e["ts"], 1) for e in items] + [(e["ts"] + e["dur"], -1) for e in items])
    level = peak = 0
    for _, delta in points:
        level += delta
        peak = max(peak, level)
    assert peak <= 5


# --- compiling is pure: an edited workflow runs its new version --------------------------------


def test_editing_a_loaded_workflow_runs_the_new_params() -> None:
    loaded = fanflow.load_workflow(
        wf([shell("say", "echo old")], outputs={"out": {"source": "${say.stdout}"}})
    )
    assert fanflow.run(loaded).outputs == {"out": "old"}
    loaded.nodes[0].params["command"] = "echo new"
    assert fanflow.run(loaded).outputs == {"out": "new"}


def test_a_compiled_workflow_is_reusable_and_immutable() -> None:
    compiled = fanflow.compile_workflow(
        fanflow.load_workflow(
            wf([shell("say", "echo hi")], outputs={"o": {"source": "${say.stdout}"}})
        )
    )
    assert fanflow.run(compiled).outputs == fanflow.run(compiled).outputs == {"o": "hi"}
    with pytest.raises(AttributeError):
        compiled.graph = None  # type: ignore[misc]


# --- a run leaves the host process as it found it ----------------------------------------------


def test_run_does_not_touch_the_hosts_gc_settings() -> None:
    before = gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()
    code = "import gc\nresult = [list(gc.get_threshold()), gc.get_freeze_count()]"
    result = fanflow.run(
        wf(
            [{"id": "probe", "type": "code", "params": {"code": code}}],
            outputs={"seen": {"source": "${probe.result}"}},
        )
    )
    assert result.outputs["seen"] == [list(before[0]), before[1]]  # during the run
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before  # after


# --- one status vocabulary --------------------------------------------------------------------


def test_statuses_are_the_one_vocabulary() -> None:
    doc = wf(
        [
            {"id": "route", "type": "code", "params": {"code": "result = 1\nnext = 'left'"}},
            shell("left", "echo L"),
            shell("right", "echo R"),
            shell("boom", "exit 3"),
        ],
        edges=[
            {"from": "route", "to": "left", "action": "left"},
            {"from": "route", "to": "right", "action": "right"},
            {"from": "left", "to": "boom"},
        ],
    )
    result = fanflow.run(doc)
    statuses = {k: v.status for k, v in result.nodes.items()}
    assert statuses == {"route": "success", "left": "success", "right": "skipped", "boom": "failed"}
    assert all(isinstance(s, fanflow.Status) for s in statuses.values())
    assert isinstance(result.status, fanflow.Status) and result.status == "failed"
    assert json.loads(json.dumps(result.to_json()))["nodes"]["right"]["status"] == "skipped"


# --- the engine knows no node type -------------------------------------------------------------


def test_scheduler_and_executor_name_no_node_type() -> None:
    root = Path(fanflow.__file__).parent
    sources = [*sorted((root / "schedule").glob("*.py")), *sorted((root / "execute").glob("*.py"))]
    assert sources
    for path in sources:
        text = path.read_text()
        for word in (
            '"shell"',
            '"merge"',
            '"code"',
            '"llm"',
            '"http"',
            "__shell_env__",
            "__sources__",
            "__action__",
        ):
            assert word not in text, f"{path.name} mentions {word}"


def test_cli_reports_a_bug_in_a_custom_node_as_an_internal_error(tmp_path: Path) -> None:
    from conftest import run_cli

    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "buggy.py").write_text(
        "from fanflow.nodes.base import Node\n"
        "class Buggy(Node):\n"
        "    type_name = 'buggy'\n"
        "    @classmethod\n"
        "    def joins_on_first(cls, params):\n"
        "        raise ZeroDivisionError('oops')\n"
    )
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf([{"id": "b", "type": "buggy"}])))
    env = {"FANFLOW_NODE_PATH": str(tmp_path / "nodes")}
    result = run_cli("run", str(path), "--output-format", "json", env=env)
    assert result.code == 1
    assert json.loads(result.stdout) == {
        "status": "failed",
        "error": "internal error: ZeroDivisionError: oops",
    }
    assert "internal error: ZeroDivisionError: oops" in result.stderr
