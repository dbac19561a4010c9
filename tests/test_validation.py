"""Bad input gets a clear error naming file, node and field, exit 2, no traceback."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import run_cli, wf
from fanflow.errors import WorkflowInvalid
from fanflow.load import model
from fanflow.load.reader import parse_workflow


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
    ok = wf([shell("a"), shell("b")], [("a", "b"), ("b", "a", "error")])
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


# --- The IR model's own validation (fanflow.load.model): every schema problem, with its path ----


def schema_problems(doc: dict) -> list[tuple[str | None, str | None, str]]:
    with pytest.raises(WorkflowInvalid) as info:
        parse_workflow(doc, "wf.json")
    assert all(p.file == "wf.json" for p in info.value.problems)
    return [(p.field, p.node, p.message) for p in info.value.problems]


def test_several_schema_problems_are_reported_at_once():
    doc = {
        "nodes": [
            shell("a"),
            {"id": "b", "type": "shell", "params": ["not", "an", "object"]},
            {"id": "c", "type": "shell", "batch": {"items": 5, "max_concurrent": 0}},
            {"id": "9d", "type": "shell"},
            {"id": "e", "type": "shell", "retry": {"backoff": "linear"}},
        ],
        "edges": [{"from": "a"}],
        "on_error": "explode",
    }
    got = schema_problems(doc)
    assert got == [
        ("nodes[1].params", "b", "Input should be a valid dictionary"),
        ("nodes[2].batch.items", "c", "Input should be a valid string or a valid list"),
        ("nodes[2].batch.max_concurrent", "c", "Input should be greater than or equal to 1"),
        ("nodes[3].id", "9d", "invalid node id '9d'"),
        ("nodes[4].retry.backoff", "e", "Input should be 'fixed' or 'exponential'"),
        ("edges[0].to", None, "required field is missing"),
        ("on_error", None, "Input should be 'fail_fast' or 'continue'"),
        ("ir_version", None, "required field is missing"),
    ]


def test_nodes_must_be_a_non_empty_list_of_objects():
    assert schema_problems(wf([])) == [("nodes", None, "List should have at least 1 item, not 0")]
    assert schema_problems({"ir_version": "0.1.0", "nodes": {"a": shell("a")}}) == [
        ("nodes", None, "Input should be a valid list")
    ]
    assert schema_problems(wf(["a"])) == [("nodes[0]", None, "Input should be a valid dictionary")]


def test_a_boolean_is_not_an_integer_and_a_string_is_not_a_number():
    doc = wf([{**shell("a"), "batch": {"items": [1], "max_concurrent": True, "retry_wait": "2"}}],
             max_visits=False)  # fmt: skip
    assert schema_problems(doc) == [
        ("nodes[0].batch.max_concurrent", "a", "Input should be a valid integer, got a boolean"),
        ("nodes[0].batch.retry_wait", "a", "Input should be a valid number"),
        ("max_visits", None, "Input should be a valid integer, got a boolean"),
    ]
    assert schema_problems(wf([{**shell("a"), "batch": {"items": [1], "parallel": 1}}])) == [
        ("nodes[0].batch.parallel", "a", "Input should be a valid boolean")
    ]


def test_whole_floats_count_as_integers_and_integers_as_floats():
    doc = wf([{**shell("a"), "batch": {"items": [1], "max_concurrent": 4.0, "retry_wait": 2}}])
    batch = parse_workflow(doc).nodes[0].batch
    assert batch is not None
    assert batch.max_concurrent == 4 and type(batch.max_concurrent) is int
    assert batch.retry_wait == 2.0 and type(batch.retry_wait) is float
    frac = wf([{**shell("a"), "batch": {"items": [1], "max_concurrent": 2.5}}])
    assert schema_problems(frac) == [
        ("nodes[0].batch.max_concurrent", "a",
         "Input should be a valid integer, got a number with a fractional part"),
    ]  # fmt: skip


def test_unknown_field_inside_batch_names_its_path_with_a_hint():
    doc = wf([{**shell("a"), "batch": {"items": [1], "paralel": True}}])
    with pytest.raises(WorkflowInvalid) as info:
        parse_workflow(doc, "wf.json")
    (problem,) = info.value.problems
    assert (problem.field, problem.node, problem.message) == (
        "nodes[0].batch.paralel", "a", "unknown field"
    )  # fmt: skip
    assert problem.hint == "remove it or check its spelling (see `fanflow guide`)"


def test_loaded_model_keeps_defaults_aliases_and_what_the_author_gave():
    doc = wf([{**shell("a"), "batch": {"items": "${x.y}", "as": "f", "max_retries": 3}},
              {"id": "b", "type": "shell", "batch_config": {"items_field": "a.results"}}],
             [("a", "b")])  # fmt: skip
    w = parse_workflow(doc, "wf.json")
    a, b = w.nodes
    assert a.batch == model.BatchSpec(items="${x.y}", as_="f", max_retries=3)
    assert a.batch.fields_set == {"items", "as_", "max_retries"}
    assert b.batch is not None and b.batch.items == "${a.results}" and b.batch_config is None
    assert "max_retries" not in b.batch.fields_set
    assert w.edges[0].from_ == "a" and w.edges[0].action == "default"
    assert w.source == "wf.json" and a.params == {"command": "true"}
    assert (w.max_visits, w.on_error, w.limits, a.retry) == (100, "fail_fast", {}, None)
    assert a.to_dict(exclude={"id"})["batch"]["as"] == "f"
    assert json.loads(w.to_json()) == {**doc, "nodes": [
        doc["nodes"][0], {"id": "b", "type": "shell", "batch": {"items": "${a.results}"}}]}  # fmt: skip


def test_json_schema_is_valid_and_describes_every_field():
    res = run_cli("schema")
    assert res.code == 0
    schema = json.loads(res.stdout)
    assert schema == model.json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    keywords = {"$schema", "$defs", "$ref", "title", "description", "type", "properties",
                "required", "additionalProperties", "items", "anyOf", "enum", "pattern",
                "minimum", "maximum", "minItems", "default"}  # fmt: skip
    types = {"object", "array", "string", "integer", "number", "boolean", "null"}

    def walk(node: dict, where: str) -> None:
        assert isinstance(node, dict), where
        assert set(node) <= keywords, (where, set(node) - keywords)
        if "type" in node:
            assert node["type"] in types, where
        if "$ref" in node:
            assert node["$ref"].removeprefix("#/$defs/") in schema["$defs"], where
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{where}.{key}")
        for i, sub in enumerate(node.get("anyOf", [])):
            walk(sub, f"{where}.anyOf[{i}]")
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{where}.{name}")
        assert set(node.get("required", [])) <= set(node.get("properties", {})), where

    walk(schema, "")
    for name, sub in schema["$defs"].items():
        walk(sub, name)

    node_fields = {f.metadata.get("alias", f.name) for f in dataclasses.fields(model.NodeSpec)}
    assert set(schema["$defs"]["NodeSpec"]["properties"]) == node_fields
    assert schema["$defs"]["NodeSpec"]["required"] == ["id", "type"]
    assert set(schema["$defs"]["BatchSpec"]["properties"]) >= {"as", "items", "max_retries"}
    assert "fields_set" not in schema["$defs"]["BatchSpec"]["properties"]
    assert set(schema["$defs"]["EdgeSpec"]["properties"]) == {
        "from",
        "to",
        "action",
        "parallel_group",
    }

    try:
        import jsonschema  # not a dependency: checked further where it is installed
    except ImportError:
        return
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(wf([shell("a"), {**shell("b"), "batch": {"items": [1], "as": "x"}}]))
    assert not validator.is_valid(wf([{**shell("a"), "batch": {"items": [1], "paralel": True}}]))
