"""The pipeline form normalises into nodes + edges (fanflow.load.pipeline)."""

from __future__ import annotations

import copy

import pytest

from fanflow.errors import WorkflowInvalid
from fanflow.load.pipeline import (
    normalise_pipeline,
    normalise_pipeline_with_paths,
    pipeline_field,
)


def n(node_id: str) -> dict:
    return {"id": node_id, "type": "shell", "params": {"command": f"echo {node_id}"}}


def ids(doc: dict) -> list[str]:
    return [node["id"] for node in doc["nodes"]]


def edges(doc: dict) -> set[tuple[str, str]]:
    return {(e["from"], e["to"]) for e in doc["edges"]}


def problems(doc: dict) -> list[tuple[str | None, str]]:
    with pytest.raises(WorkflowInvalid) as info:
        normalise_pipeline(doc, "wf.json")
    for p in info.value.problems:
        assert p.file == "wf.json"
    return [(p.field, p.message) for p in info.value.problems]


def test_document_without_pipeline_is_unchanged():
    doc = {"ir_version": "0.1.0", "nodes": [n("a")], "edges": []}
    assert normalise_pipeline(doc) is doc


def test_linear_pipeline_becomes_a_chain_and_keeps_other_keys_in_place():
    doc = {
        "ir_version": "0.1.0",
        "inputs": {"x": {"type": "string"}},
        "pipeline": [n("a"), n("b"), n("c")],
        "outputs": {"o": {"source": "${c.stdout}"}},
    }
    out = normalise_pipeline(doc)
    assert list(out) == ["ir_version", "inputs", "nodes", "edges", "outputs"]
    assert ids(out) == ["a", "b", "c"]
    assert out["edges"] == [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]
    assert out["nodes"][0] == n("a")
    assert "pipeline" not in out


def test_input_document_is_not_mutated_and_nodes_are_copies():
    doc = {"pipeline": [n("a"), {"parallel": [n("b"), n("c")]}]}
    before = copy.deepcopy(doc)
    out = normalise_pipeline(doc)
    out["nodes"][0]["params"]["command"] = "changed"
    assert doc == before


def test_single_node_pipeline_has_no_edges():
    out = normalise_pipeline({"pipeline": [n("only")]})
    assert ids(out) == ["only"]
    assert out["edges"] == []


def test_fan_out_fan_in():
    out = normalise_pipeline(
        {"pipeline": [n("fetch"), {"parallel": [n("fr"), n("de")]}, n("join")]}
    )
    assert ids(out) == ["fetch", "fr", "de", "join"]
    # Edges come out in reading order, each once.
    assert out["edges"] == [
        {"from": "fetch", "to": "fr"},
        {"from": "fetch", "to": "de"},
        {"from": "fr", "to": "join"},
        {"from": "de", "to": "join"},
    ]


def test_sub_chains_inside_a_block():
    doc = {
        "pipeline": [
            n("start"),
            {"parallel": [[n("a1"), n("a2"), n("a3")], n("b"), [n("c1"), n("c2")]]},
            n("end"),
        ]
    }
    out = normalise_pipeline(doc)
    assert ids(out) == ["start", "a1", "a2", "a3", "b", "c1", "c2", "end"]
    assert edges(out) == {
        ("start", "a1"),
        ("a1", "a2"),
        ("a2", "a3"),
        ("start", "b"),
        ("start", "c1"),
        ("c1", "c2"),
        ("a3", "end"),
        ("b", "end"),
        ("c2", "end"),
    }


def test_nested_parallel_blocks_and_blocks_inside_sub_chains():
    doc = {
        "pipeline": [
            n("s"),
            {
                "parallel": [
                    {"parallel": [n("x"), n("y")]},
                    [n("p"), {"parallel": [n("q1"), [n("q2a"), n("q2b")]]}, n("r")],
                ]
            },
            n("t"),
        ]
    }
    out = normalise_pipeline(doc)
    assert ids(out) == ["s", "x", "y", "p", "q1", "q2a", "q2b", "r", "t"]
    assert edges(out) == {
        ("s", "x"),
        ("s", "y"),
        ("s", "p"),
        ("p", "q1"),
        ("p", "q2a"),
        ("q2a", "q2b"),
        ("q1", "r"),
        ("q2b", "r"),
        ("x", "t"),
        ("y", "t"),
        ("r", "t"),
    }


def test_consecutive_blocks_connect_every_exit_to_every_entry():
    out = normalise_pipeline(
        {"pipeline": [{"parallel": [n("a"), n("b")]}, {"parallel": [n("c"), n("d"), n("e")]}]}
    )
    assert edges(out) == {(x, y) for x in "ab" for y in "cde"}


def test_pipeline_starting_and_ending_with_blocks():
    out = normalise_pipeline({"pipeline": [{"parallel": [n("a"), [n("b"), n("c")]]}]})
    assert ids(out) == ["a", "b", "c"]
    assert edges(out) == {("b", "c")}


def test_top_level_list_is_a_sequence():
    out = normalise_pipeline({"pipeline": [n("a"), [n("b"), n("c")], n("d")]})
    assert out["edges"] == [
        {"from": "a", "to": "b"},
        {"from": "b", "to": "c"},
        {"from": "c", "to": "d"},
    ]


def test_block_purpose_is_documentation_only():
    out = normalise_pipeline(
        {"pipeline": [{"parallel": [n("a"), n("b")], "purpose": "two at once"}, n("c")]}
    )
    assert ids(out) == ["a", "b", "c"]
    assert edges(out) == {("a", "c"), ("b", "c")}


def test_extra_edges_are_appended_and_not_doubled():
    doc = {
        "pipeline": [n("draft"), n("review"), n("publish")],
        "edges": [
            {"from": "review", "to": "draft", "action": "revise"},
            {"from": "draft", "to": "review"},
        ],
    }
    out = normalise_pipeline(doc)
    assert out["edges"] == [
        {"from": "draft", "to": "review"},
        {"from": "review", "to": "publish"},
        {"from": "review", "to": "draft", "action": "revise"},
    ]


def test_pipeline_together_with_nodes_is_an_error():
    got = problems({"nodes": [n("a")], "pipeline": [n("b")]})
    assert got == [("pipeline", "'pipeline' and 'nodes' cannot be used together")]


def test_pipeline_not_a_list_and_empty_pipeline():
    assert problems({"pipeline": {"id": "a"}}) == [
        ("pipeline", "'pipeline' must be a list of steps, got an object")
    ]
    assert problems({"pipeline": []}) == [("pipeline", "empty pipeline")]


def test_empty_block_reports_its_path():
    got = problems({"pipeline": [n("a"), n("b"), {"parallel": []}]})
    assert got == [("pipeline[2].parallel", "empty parallel block")]


def test_block_whose_parallel_is_not_a_list():
    got = problems({"pipeline": [{"parallel": n("a")}]})
    assert got == [("pipeline[0].parallel", "'parallel' must be a list of branches, got an object")]


def test_block_with_node_keys_is_an_error():
    got = problems({"pipeline": [{"id": "x", "type": "shell", "parallel": [n("a")]}]})
    assert len(got) == 1
    assert got[0][0] == "pipeline[0]"
    assert "takes only 'parallel'" in got[0][1]


def test_entry_neither_node_nor_block():
    got = problems({"pipeline": [n("a"), {"parallel": ["b", n("c")]}, 7]})
    assert got == [
        ("pipeline[1].parallel[0]", "expected a node or a parallel block, got a string"),
        ("pipeline[2]", "expected a node or a parallel block, got a number"),
    ]


def test_node_missing_id_deep_inside():
    doc = {
        "pipeline": [
            n("a"),
            {"parallel": [n("b"), [n("c"), {"parallel": [n("d"), {"type": "shell"}]}]]},
        ]
    }
    got = problems(doc)
    assert got == [("pipeline[1].parallel[1][1].parallel[1]", "node has no 'id'")]


def test_bad_id_type_and_empty_sub_chain():
    got = problems({"pipeline": [{"id": 3, "type": "shell"}, {"parallel": [[], n("x")]}]})
    assert got == [
        ("pipeline[0].id", "node 'id' must be a non-empty string, got 3"),
        ("pipeline[1].parallel[0]", "empty sub-chain"),
    ]


def test_every_problem_is_reported_with_a_hint():
    with pytest.raises(WorkflowInvalid) as info:
        normalise_pipeline({"pipeline": [{"parallel": []}, {"type": "x"}, None]}, "f.json")
    fields = [p.field for p in info.value.problems]
    assert fields == ["pipeline[0].parallel", "pipeline[1]", "pipeline[2]"]
    assert all(p.hint for p in info.value.problems)
    text = str(info.value)
    assert "f.json:pipeline[1]: node has no 'id'" in text


def test_paths_map_normalised_nodes_back_to_the_pipeline():
    doc = {"pipeline": [n("a"), {"parallel": [n("b"), [n("c"), n("d")]]}]}
    _, paths = normalise_pipeline_with_paths(doc)
    assert paths == {
        "nodes[0]": "pipeline[0]",
        "nodes[1]": "pipeline[1].parallel[0]",
        "nodes[2]": "pipeline[1].parallel[1][0]",
        "nodes[3]": "pipeline[1].parallel[1][1]",
    }
    assert (
        pipeline_field("nodes[3].params.command", paths)
        == "pipeline[1].parallel[1][1].params.command"
    )
    assert pipeline_field("nodes[2]", paths) == "pipeline[1].parallel[1][0]"
    assert pipeline_field("edges[0].to", paths) == "edges[0].to"
    assert pipeline_field(None, paths) is None
