"""Params and edges are checked before anything runs (issue 12): typed params, edge actions a
node can emit, no stale `error` after a later loop visit, data order when there are no edges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fanflow
from conftest import run_cli, wf
from fanflow.compile.graph import build_graph
from fanflow.errors import WorkflowInvalid
from fanflow.load.reader import parse_source
from fanflow.nodes.base import Node, Param


def sh(node_id: str, command: Any = "true", **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "shell", "params": {"command": command, **params}}


def code(node_id: str, source: str, **inputs: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "code", "params": {"code": source, "inputs": inputs}}


def problems_of(res: Any) -> dict[str, dict[str, Any]]:
    """The JSON object's problems, by field."""
    out = res.json
    assert out["status"] == "invalid", out
    return {p["field"]: p for p in out["problems"]}


# --------------------------------------------------------------------------- typed params


def test_a_string_for_a_boolean_is_rejected_before_the_command_runs(write_wf, tmp_path):
    # Today "false" (a string) is truthy: the failing command "succeeds".
    doc = wf([sh("a", "touch ran; false", ignore_errors="false")])
    res = run_cli("run", str(write_wf(doc)), cwd=tmp_path)
    assert res.code == 2, res.stderr
    assert "wf.json:nodes[0].params.ignore_errors (node 'a')" in res.stderr
    assert "parameter 'ignore_errors' must be a boolean, got string \"false\"" in res.stderr
    assert "hint: write false without quotes" in res.stderr
    assert not (tmp_path / "ran").exists()  # nothing ran


def test_every_wrong_param_type_is_reported_at_once_in_the_json_contract(write_wf, tmp_path):
    doc = wf(
        [
            sh("t", "true", timeout="abc"),
            sh("l", ["echo", "hi"]),
            sh("e", "true", env="X=1"),
            sh("n", "true", timeout="30"),
            sh("z", "true", timeout=0),
            sh("v", "true", env={"OK": "1", "N": 2, "BAD": {"x": 1}}),
        ]
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", cwd=tmp_path)
    assert res.code == 2
    assert "never awaited" not in res.stderr
    found = problems_of(res)
    assert found["nodes[0].params.timeout"]["node"] == "t"
    assert found["nodes[0].params.timeout"]["message"] == (
        "parameter 'timeout' must be a number, got string \"abc\""
    )
    assert found["nodes[0].params.timeout"]["file"].endswith("wf.json")
    cmd = found["nodes[1].params.command"]
    assert cmd["message"] == "parameter 'command' must be a string, got array"
    assert cmd["hint"] == 'write it as one string, e.g. "echo hi"'
    assert found["nodes[2].params.env"]["message"] == (
        "parameter 'env' must be an object, got string \"X=1\""
    )
    assert "{" in found["nodes[2].params.env"]["hint"]
    assert found["nodes[3].params.timeout"]["hint"] == "write 30 without quotes"
    assert found["nodes[4].params.timeout"]["message"] == (
        "parameter 'timeout' must be greater than 0, got 0"
    )
    assert found["nodes[5].params.env.BAD"]["message"] == (
        "parameter 'env.BAD' must be a string or number, got object"
    )
    assert set(found) == {
        "nodes[0].params.timeout", "nodes[1].params.command", "nodes[2].params.env",
        "nodes[3].params.timeout", "nodes[4].params.timeout", "nodes[5].params.env.BAD",
    }  # fmt: skip


def test_other_node_types_check_their_params_too(write_wf):
    doc = wf(
        [
            {"id": "r", "type": "read-file", "params": {"file_path": 5}},
            {
                "id": "w",
                "type": "write-file",
                "params": {"file_path": "x", "content": "y", "append": "yes"},
            },
            {
                "id": "h",
                "type": "http",
                "params": {"url": "http://x", "headers": ["a"], "timeout": -1},
            },
            {
                "id": "m",
                "type": "llm",
                "params": {"prompt": "hi", "max_tokens": 1.5, "temperature": "0.2"},
            },
            {"id": "c", "type": "code", "params": {"code": "result = 1", "inputs": [1]}},
            {"id": "g", "type": "merge", "params": {"inputs": ["${r.content}"], "separator": 1}},
        ]
    )
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    for field, text in [
        ("nodes[0].params.file_path", "must be a string, got number 5"),
        ("nodes[1].params.append", 'must be a boolean, got string "yes"'),
        ("nodes[2].params.headers", "must be an object, got array"),
        ("nodes[2].params.timeout", "must be greater than 0, got -1"),
        ("nodes[3].params.max_tokens", "must be an integer, got number 1.5"),
        ("nodes[3].params.temperature", 'must be a number, got string "0.2"'),
        ("nodes[4].params.inputs", "must be an object, got array"),
        ("nodes[5].params.separator", "must be a string, got number 1"),
    ]:
        assert f"{field} " in res.stderr and text in res.stderr, (field, res.stderr)
    assert res.stderr.count("params.separator") == 1  # one problem, not one per check


def test_a_template_value_is_checked_after_rendering(write_wf, tmp_path):
    doc = wf(
        [sh("a", "true", timeout="${t}")],
        inputs={"t": {"type": "string", "required": True}},
    )
    res = run_cli("run", str(write_wf(doc)), "t=abc", "--output-format", "json", cwd=tmp_path)
    assert res.code == 1
    out = res.json
    assert out["failed_node"] == "a"
    assert out["nodes"]["a"]["error"] == (
        "parameter 'timeout' must be a number, got string \"abc\" (from ${t})"
    )
    assert "never awaited" not in res.stderr


def test_numeric_and_boolean_text_from_a_template_is_coerced(write_wf, tmp_path):
    # Shell stdout is always text: "5" becomes the number 5 and "false" the boolean false, so
    # the failing command below fails (a truthy "false" would have ignored its error).
    doc = wf(
        [
            sh("cfg", "echo false"),
            sh("secs", "echo 5"),
            sh("run", "exit 3", timeout="${secs.stdout}", ignore_errors="${cfg.stdout}"),
        ],
        [("cfg", "secs"), ("secs", "run")],
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", cwd=tmp_path)
    assert res.code == 1, res.stdout
    assert res.json["nodes"]["run"]["error"].startswith("command failed with exit code 3")


def test_each_batch_item_is_checked(write_wf, tmp_path):
    doc = wf(
        [
            {
                **sh("a", "echo ${item}", timeout="${item}"),
                "batch": {"items": [1, "x"], "error_handling": "continue"},
            },
        ],
        outputs={"errors": {"source": "${a.errors}"}, "results": {"source": "${a.results}"}},
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", cwd=tmp_path)
    assert res.code == 0, res.stdout
    out = res.json["outputs"]
    assert out["results"][0]["stdout"] == "1" and out["results"][1] is None
    assert out["errors"][0]["error"] == (
        "parameter 'timeout' must be a number, got string \"x\" (from ${item})"
    )


def test_check_value_unit():
    from fanflow.validate.params import check_value

    number = Param("number", gt=0)
    assert check_value("t", number, 2) == (2, None)
    assert check_value("t", number, None) == (None, None)  # optional: null is the default
    assert check_value("t", Param("number", True), None)[1].message == (
        "parameter 't' must be a number, got null"
    )
    assert check_value("t", number, True)[1].message == (
        "parameter 't' must be a number, got boolean true"
    )
    assert check_value("t", number, " 7\n", rendered=True) == (7, None)  # text from a template
    assert check_value("t", Param("integer"), 3.0) == (3.0, None)  # a whole float is an integer
    assert check_value("o", Param("object"), '{"a": 1}', rendered=True) == ({"a": 1}, None)
    assert check_value("o", Param("array"), "[1]", rendered=True) == ([1], None)
    assert check_value("b", Param("boolean"), "yes", rendered=True)[1] is not None
    assert check_value("x", Param("any"), object())[1] is None


def test_user_node_classes_without_params_spec_are_not_checked():
    class Loose(Node):  # no params_spec: anything goes
        type_name = "loose-test"

    class Typed(Node):
        type_name = "typed-test"
        params_spec = {"n": Param("integer", True)}

    fanflow.register_node(Loose)
    fanflow.register_node(Typed)
    fanflow.compile_workflow(
        wf([{"id": "a", "type": "loose-test", "params": {"n": "x", "y": [1]}}])
    )
    with pytest.raises(WorkflowInvalid, match="parameter 'n' must be an integer"):
        fanflow.compile_workflow(wf([{"id": "a", "type": "typed-test", "params": {"n": "x"}}]))


# --------------------------------------------------------------------------- edge actions


def test_an_edge_on_an_action_the_node_never_emits_is_rejected(write_wf):
    doc = wf([sh("sh"), sh("x")], [("sh", "x", "eror")])
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    assert "wf.json:edges[0].action (node 'sh')" in res.stderr
    assert "node 'sh' (shell) never emits action 'eror'; did you mean 'error'?" in res.stderr
    assert "shell emits: default, error" in res.stderr


def test_actions_per_node_kind(write_wf):
    doc = wf(
        [
            code("route", "result = 1\nnext = 'left'"),  # code: any action (its `next`)
            sh("left"),
            {"id": "get", "type": "http", "params": {"url": "http://127.0.0.1:9"}},
            sh("fix"),
            {**code("each", "result = item\nnext = 'odd'"), "batch": {"items": [1, 2]}},
            sh("odd"),
        ],
        [
            ("route", "left", "left"),
            ("left", "get"),
            ("get", "fix", "error"),
            ("get", "each"),
            ("each", "odd", "odd"),
        ],
    )
    res = run_cli("validate", str(write_wf(doc)), "--")
    assert res.code == 2
    # Only the batch edge is wrong: a batch node's action is always 'default' (or 'error').
    assert res.stderr.count("never emits") == 1
    assert "node 'each' (code, batch) never emits action 'odd'" in res.stderr
    assert "edges[4].action" in res.stderr


def test_a_duplicated_edge_is_rejected(write_wf):
    doc = wf([sh("a"), sh("b")], [("a", "b"), ("a", "b"), ("a", "b", "error")])
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    assert "wf.json:edges[1] (node 'a'): edge a → b (action 'default') repeats edges[0]" in (
        res.stderr
    )
    assert "edges[2]" not in res.stderr


# --------------------------------------------------------------------------- loops


LOOP = [
    code(
        "work",
        "import os\nif not os.path.exists('fixed'):\n    raise ValueError('not yet')\n"
        "result = 'ok'",
    ),
    sh("fix", "touch fixed"),
    sh("done", "echo ${work.result}"),
]
LOOP_EDGES = [("work", "fix", "error"), ("fix", "work"), ("work", "done")]


def test_a_later_successful_loop_visit_carries_no_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fanflow.run(wf(LOOP, LOOP_EDGES), checkpoint=False)
    assert result.ok, result.error
    work = result.nodes["work"]
    assert (work.status, work.error, work.handled, work.action) == (
        "success",
        None,
        False,
        "default",
    )
    assert result.store["work"]["result"] == "ok" and "error" not in result.store["work"]


def test_a_cancelled_loop_visit_does_not_report_the_earlier_visits_error(write_wf, tmp_path):
    doc = wf(
        [
            sh(
                "work",
                "if [ -e fixed ]; then touch started; sleep 20; else echo no >&2; exit 1; fi",
            ),
            sh("fix", "touch fixed"),
            sh("boom", "while [ ! -e started ]; do sleep 0.02; done; exit 3"),
        ],
        [("work", "fix", "error"), ("fix", "work")],
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", cwd=tmp_path)
    assert res.code == 1
    nodes = res.json["nodes"]
    assert nodes["boom"]["status"] == "failed"
    assert nodes["work"]["status"] == "cancelled"
    assert "exit code 1" not in nodes["work"].get("error", "")


# --------------------------------------------------------------------------- no edges: data order


def test_without_edges_a_node_waits_for_a_later_node_it_reads(write_wf, tmp_path):
    # Array order where the data allows it: x, a, c (reads a, listed first), y.
    doc = wf(
        [
            sh("c", "echo c >> log; echo got-${a.stdout}"),
            sh("x", "echo x >> log"),
            sh("a", "echo a >> log; echo A"),
            sh("y", "echo y >> log"),
        ],
        outputs={"c": {"source": "${c.stdout}"}},
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", cwd=tmp_path)
    assert res.code == 0, res.stdout + res.stderr
    assert res.json["outputs"] == {"c": "got-A"}
    assert (tmp_path / "log").read_text().split() == ["x", "a", "c", "y"]
    assert res.json["warnings"] == []


def test_without_edges_a_real_cycle_of_reads_is_still_an_error(write_wf):
    doc = wf([sh("a", "echo ${b.stdout}"), sh("b", "echo ${a.stdout}"), sh("c")])
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    assert "cycle of template reads: a → b → a" in res.stderr


def test_without_edges_start_node_runs_first(write_wf, tmp_path):
    doc = wf([sh("a", "echo a >> log"), sh("b", "echo b >> log"), sh("s", "echo s >> log")],
             start_node="s")  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), cwd=tmp_path)
    assert res.code == 0, res.stderr
    assert (tmp_path / "log").read_text().split() == ["s", "a", "b"]


def test_without_edges_a_start_node_that_reads_another_is_rejected(write_wf):
    doc = wf([sh("a"), sh("s", "echo ${a.stdout}")], start_node="s")
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    assert "start_node 's' reads 'a', so it cannot run first" in res.stderr


def test_implicit_chain_order_unit():
    def chain(nodes: list[dict[str, Any]], **extra: Any) -> list[tuple[str, str]]:
        g = build_graph(parse_source(wf(nodes, **extra)))
        assert g.implicit_chain
        return [(e.src, e.dst) for e in g.edges]

    assert chain([sh("a"), sh("b"), sh("c")]) == [("a", "b"), ("b", "c")]  # array order
    assert chain([sh("b", "${a.stdout}"), sh("a"), sh("c")]) == [("a", "b"), ("b", "c")]
    # A batch over a later node's output waits for it too.
    batch = {**sh("each", "echo ${item}"), "batch": {"items": "${list.stdout}"}}
    assert chain([batch, sh("list")]) == [("list", "each")]


# --------------------------------------------------------------------------- neighbours


def test_an_input_default_of_the_wrong_type_is_rejected(write_wf):
    doc = wf(
        [sh("a", "echo ${n} ${flag}")],
        inputs={
            "n": {"type": "integer", "required": False, "default": "3"},
            "flag": {"type": "boolean", "required": False, "default": 1},
        },
    )
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    assert "wf.json:inputs.n.default: default of input 'n' must be an integer, got string" in (
        res.stderr
    )
    assert "hint: write 3 without quotes" in res.stderr
    assert "inputs.flag.default: default of input 'flag' must be a boolean, got number 1" in (
        res.stderr
    )


@pytest.mark.parametrize(
    "node",
    [
        {"id": "a", "type": "shell", "params": {"command": "true"}, "batch": {"items": [1], "max_concurrent": 0}},
        {"id": "a", "type": "shell", "params": {"command": "true"}, "batch": {"items": [1], "paralel": True}},
        {"id": "a", "type": "shell", "params": {"command": "true"}, "retry": {"max_attempts": "3"}},
    ],
)  # fmt: skip
def test_batch_and_retry_config_are_typed(node: dict[str, Any]):
    with pytest.raises(WorkflowInvalid):
        fanflow.compile_workflow(wf([node]))


def test_examples_still_validate():
    examples = Path(__file__).parent.parent / "examples"
    for path in sorted(examples.glob("*.json")):
        fanflow.compile_workflow(path)
