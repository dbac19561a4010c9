"""Bad input gets a clear error naming file, node and field, exit 2, no traceback."""

from __future__ import annotations

import json

from conftest import run_cli, wf


def shell(node_id: str, command: str = "true") -> dict:
    return {"id": node_id, "type": "shell", "params": {"command": command}}


def test_malformed_json_reports_line_and_column(write_wf):
    path = write_wf('{\n  "ir_version": "0.1.0",\n  "nodes": [\n    {"id": "a",}\n  ]\n}')
    res = run_cli("validate", str(path))
    assert res.code == 2
    assert "line 4, column 16" in res.stderr and str(path) in res.stderr
    assert "trailing comma" in res.stderr


def test_missing_file(tmp_path):
    res = run_cli("run", str(tmp_path / "nope.json"))
    assert res.code == 2 and "file not found" in res.stderr


def test_schema_errors_name_the_path(write_wf):
    doc = wf([shell("a"), {"id": "b", "type": "shell", "params": "oops"},
              {"id": "c", "type": "shell", "params": {"command": "x"}, "batch": {"items": [1], "max_concurrent": 0}},
              {"id": "d", "type": "shell", "parms": {}}])  # fmt: skip
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    assert "nodes[1].params" in res.stderr and "(node 'b')" in res.stderr
    assert "nodes[2].batch.max_concurrent" in res.stderr
    assert "nodes[3].parms" in res.stderr and "unknown field" in res.stderr


def test_semantic_problems_are_all_reported_at_once(write_wf):
    doc = wf(
        [
            shell("a"),
            shell("a"),
            {"id": "b", "type": "shel", "params": {"command": "x"}},
            shell("c", "echo ${fetch.stdout} ${a.stdot}"),
            {"id": "d", "type": "shell", "params": {"comand": "x"}},
        ],
        [("a", "c"), ("c", "ghost")],
    )
    res = run_cli("validate", str(write_wf(doc)), "--")
    assert res.code == 2
    err = res.stderr
    assert "duplicate node id 'a'" in err
    assert "unknown node type 'shel'" in err and "did you mean 'shell'" in err
    assert "edge to unknown node 'ghost'" in err
    assert "unknown parameter 'comand'" in err and "did you mean 'command'" in err
    assert "missing required parameter 'command'" in err


def test_template_problems(write_wf):
    doc = wf(
        [shell("fetch", "echo hi"), shell("use", "echo ${fetc.stdout} ${fetch.stdot} ${nope}")],
        outputs={"x": {"source": "${use.result}"}},
    )
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    err = res.stderr
    assert "unknown node or input 'fetc'" in err and "did you mean 'fetch'" in err
    assert "node 'fetch' (shell) has no output 'stdot'" in err and "did you mean 'stdout'" in err
    assert "unknown node or input 'nope'" in err
    assert "outputs.x.source" in err and "has no output 'result'" in err
    assert "nodes[1].params.command" in err


def test_default_edge_cycle_is_invalid_but_action_loop_is_fine(write_wf):
    cyc = wf([shell("a"), shell("b"), shell("c")], [("a", "b"), ("b", "c"), ("c", "a")])
    res = run_cli("validate", str(write_wf(cyc)))
    assert res.code == 2 and "cycle of default edges: a → b → c → a" in res.stderr
    ok = wf([shell("a"), shell("b")], [("a", "b"), ("b", "a", "retry")])
    assert run_cli("validate", str(write_wf(ok, "ok.json"))).code == 0


def test_missing_required_input_exit_2(write_wf):
    doc = wf(
        [shell("a", "echo ${repo}")], inputs={"repo": {"type": "string", "description": "path"}}
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 2
    assert "missing required input 'repo'" in res.stderr
    assert json.loads(res.stdout)["status"] == "invalid"


def test_batch_items_that_are_not_a_list_fail_clearly(write_wf):
    doc = wf([{"id": "src", "type": "code", "params": {"code": "result = 42"}},
              {"id": "work", "type": "shell", "params": {"command": "echo ${item}"},
               "batch": {"items": "${src.result}"}}])  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 1
    assert "batch items of node 'work' resolved to int, expected a list" in res.json["error"]


def test_seed_parallel_group_is_accepted(write_wf):
    doc = wf([shell("a"), shell("b"), shell("c")],
             [{"from": "a", "to": "b", "parallel_group": "g"}, {"from": "a", "to": "c", "parallel_group": "g"}])  # fmt: skip
    assert run_cli("run", str(write_wf(doc))).code == 0


def test_valid_workflow_reports_counts(write_wf):
    res = run_cli("validate", str(write_wf(wf([shell("a"), shell("b")]))))
    assert res.code == 0 and "valid (2 nodes, 1 edges)" in res.stdout
