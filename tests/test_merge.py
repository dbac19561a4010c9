"""The merge node on its own: each strategy, both input forms, the engine-provided sources."""

from __future__ import annotations

from typing import Any

import pytest

from fanflow.errors import NodeError
from fanflow.nodes.base import Node
from fanflow.nodes.merge import MergeNode


def merge(**params: Any) -> dict[str, Any]:
    """Run the node's lifecycle the way the engine does and return what it wrote."""
    node = MergeNode()
    node.set_params(params)
    shared: dict[str, Any] = {}
    prep = node.prep(shared)
    node.post(shared, prep, node.exec(prep))
    return shared


def test_contract_is_declared_for_the_registry_and_the_guide():
    assert issubclass(MergeNode, Node)
    assert MergeNode.type_name == "merge"
    assert MergeNode.description
    assert set(MergeNode.params_spec) == {"inputs", "strategy", "separator"}
    assert MergeNode.params_spec["inputs"].required
    assert MergeNode.params_spec["strategy"].default == "object"
    assert MergeNode.params_spec["separator"].default == "\n"
    assert set(MergeNode.outputs_spec) == {"result", "winner"}
    assert all(p.description for p in MergeNode.params_spec.values())


def test_registry_maps_merge_to_this_class():
    from fanflow.nodes.registry import get_node_class

    assert get_node_class("merge") is MergeNode


def test_object_keyed_by_source_node_id():
    out = merge(inputs=["bonjour", {"n": 2}], sources=["fr", "de"])
    assert out == {"result": {"fr": "bonjour", "de": {"n": 2}}}


def test_object_is_the_default_strategy():
    out = merge(inputs=["x", "y"], sources=["a", "b"], strategy=None)
    assert out["result"] == {"a": "x", "b": "y"}


def test_object_from_dict_form_uses_the_names():
    out = merge(
        inputs={"french": "bonjour", "german": "hallo"},
        sources={"french": "fr", "german": "de"},
        strategy="object",
    )
    assert out["result"] == {"french": "bonjour", "german": "hallo"}
    assert list(out["result"]) == ["french", "german"]


def test_object_without_sources_falls_back_to_positions():
    # A literal entry (or one reading only workflow inputs) has no source node.
    out = merge(inputs=["x", "y", "z"], sources=["a", None])
    assert out["result"] == {"a": "x", "1": "y", "2": "z"}


def test_object_with_two_entries_from_one_node_fails_clearly():
    with pytest.raises(NodeError, match="two inputs read node 'a'"):
        merge(inputs=["x", "y"], sources=["a", "a"])


def test_list_keeps_declared_order_for_both_forms():
    assert merge(inputs=[3, 1, 2], sources=["c", "a", "b"], strategy="list") == {
        "result": [3, 1, 2]
    }
    out = merge(inputs={"z": 1, "a": 2}, sources={"z": "n1", "a": "n2"}, strategy="list")
    assert out["result"] == [1, 2]


def test_concat_default_separator_and_custom_separator():
    assert merge(inputs=["a", "b", "c"], strategy="concat")["result"] == "a\nb\nc"
    assert merge(inputs=["a", "b"], strategy="concat", separator=" | ")["result"] == "a | b"
    assert merge(inputs=["a", "b"], strategy="concat", separator="")["result"] == "ab"


def test_concat_renders_non_text_like_an_embedded_template_and_skips_absent_values():
    out = merge(
        inputs=["n=", 3, {"k": "é"}, [1, True], None, False], strategy="concat", separator=""
    )
    assert out["result"] == 'n=3{"k": "é"}[1, true]false'


def test_first_with_only_the_winner_present():
    out = merge(inputs=["fast answer"], sources=["fast"], strategy="first")
    assert out == {"result": "fast answer", "winner": "fast"}


def test_first_with_dict_form_reports_the_node_id():
    out = merge(inputs={"b": "B"}, sources={"b": "provider_b"}, strategy="first")
    assert out == {"result": "B", "winner": "provider_b"}


def test_first_with_every_entry_present_is_deterministic():
    out = merge(inputs=[None, "second", "third"], sources=["a", "b", "c"], strategy="first")
    assert out == {"result": "second", "winner": "b"}


def test_first_with_nothing_present_fails():
    with pytest.raises(NodeError, match="no upstream produced a value"):
        merge(inputs=[None], sources=["a"], strategy="first")


def test_unknown_strategy_and_bad_inputs_fail_at_run_time():
    with pytest.raises(NodeError, match="unknown merge strategy 'union'"):
        merge(inputs=["a"], strategy="union")
    with pytest.raises(NodeError, match="must be a list"):
        merge(inputs="${a.stdout}")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"inputs": ["${a.x}"], "strategy": "union"}, "unknown merge strategy"),
        ({"inputs": "${a.x}"}, "must be a list of templates"),
        ({"inputs": []}, "is empty"),
        ({"inputs": ["${a.x}", "${ a.y }"]}, "two inputs read node 'a'"),
    ],
)
def test_validate_params_reports_static_mistakes(params, fragment):
    problems = MergeNode.validate_params(params)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_validate_params_accepts_good_configurations():
    assert MergeNode.validate_params({"inputs": ["${a.x}", "${b.x}"]}) == []
    assert MergeNode.validate_params({"inputs": ["${a.x}", "${a.y}"], "strategy": "list"}) == []
    assert MergeNode.validate_params({"inputs": {"p": "${a.x}", "q": "${a.y}"}}) == []
