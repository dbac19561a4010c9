"""Node loops (`loop:` on a node, pflow's form): pass after pass until the condition says stop,
values carried into the next pass's inputs, bounded by max_iterations."""

from __future__ import annotations

from pathlib import Path

import fanflow
from conftest import run_cli, wf

PFLOW = Path(__file__).parent / "pflow"


def _counter(loop: dict, code: str | None = None) -> dict:
    return wf(
        [{"id": "count", "type": "code",
          "params": {"code": code or 'total: int = 0\nresult = {"total": total + 1, "done": total + 1 >= 3}'},
          "loop": loop}],
        outputs={"total": {"source": "${count.result.total}"}},
    )  # fmt: skip


def test_pflows_guide_loop_runs_until_done_with_the_carried_total():
    result = fanflow.run(PFLOW / "guide-loop-1.pflow.md", checkpoint=False)
    assert result.ok, result.error
    out = result.store["count-up"]
    assert out["result"] == {"total": 3, "done": True}  # what pflow's guide says it prints
    assert out["iterations"] == 3 and out["loop_stopped"] == "condition"


def test_a_typed_default_is_the_first_pass_and_the_carried_value_wins_after():
    carry = {"total": "${count.result.total}"}
    result = fanflow.run(
        _counter({"until": "${count.result.done}", "carry": carry}), checkpoint=False
    )
    assert result.ok, result.error
    assert result.outputs == {"total": 3}
    assert result.store["count"]["iterations"] == 3


def test_while_form_and_the_cap(write_wf):
    carry = {"total": "${count.result.total}"}
    capped = _counter({"while": "${count.result.total}", "carry": carry, "max_iterations": 5})
    r = run_cli("run", str(write_wf(capped)), "--output-format", "json")
    assert r.code == 0, r.stderr
    assert r.json["outputs"] == {"total": 5}  # the condition stayed true: the cap stopped it
    assert r.json["nodes"]["count"].get("attempts", 1) == 1  # passes are not retries


def test_iteration_number_is_readable_in_params():
    doc = wf(
        [{"id": "n", "type": "code",
          "params": {"code": "result = {'seen': i, 'more': i < 4}", "inputs": {"i": "${__iteration__}"}},
          "loop": {"while": "${n.result.more}"}}],
        outputs={"last": {"source": "${n.result.seen}"}},
    )  # fmt: skip
    result = fanflow.run(doc, checkpoint=False)
    assert result.ok, result.error
    assert result.outputs == {"last": 4}


def test_a_text_condition_is_an_error_not_true():
    doc = _counter({"until": "${count.stdout}"}, code="print('false')\nresult = 1")
    result = fanflow.run(doc, checkpoint=False)
    assert not result.ok
    assert "loop condition is text" in result.error


def test_loop_mistakes_are_validation_errors(write_wf):
    doc = wf(
        [
            {"id": "a", "type": "code", "params": {"code": "result = 1"}, "loop": {"max_iterations": 3}},
            {"id": "b", "type": "code", "params": {"code": "result = 1"}, "loop": {"until": "${a.result}"}},
            {"id": "c", "type": "code", "params": {"code": "result = 1"},
             "loop": {"until": "${c.result}", "carry": {"x": "${a.result}"}}},
            {"id": "d", "type": "read-file", "params": {"file_path": "x"},
             "loop": {"until": "${d.content}", "carry": {"x": "${d.content}"}}},
            {"id": "e", "type": "code", "params": {"code": "result = 1"}, "batch": {"items": [1]},
             "loop": {"until": "${e.result}"}},
        ],
        [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")],
    )  # fmt: skip
    r = run_cli("validate", str(write_wf(doc)), "--output-format", "json")
    assert r.code == 2
    found = {(p["node"], p["field"]): p["message"] for p in r.json["problems"]}
    assert "exactly one of `while` and `until`" in found[("a", "nodes[0].loop")]
    assert "reading this node's output" in found[("b", "nodes[1].loop.until")]
    assert "not 'a'" in found[("c", "nodes[2].loop.carry.x")]
    assert "has none" in found[("d", "nodes[3].loop.carry")]
    assert "both batch and loop" in found[("e", "nodes[4].loop")]
