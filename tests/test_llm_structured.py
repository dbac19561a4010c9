"""llm structured output and offline answers: output_schema (native, validated, repaired),
the echo provider and mock_response, through fanflow.run against the loopback mock."""

from __future__ import annotations

from typing import Any

import pytest

import fanflow
from conftest import point_llm_at, run_cli, wf
from fanflow.errors import WorkflowInvalid
from fanflow.io.schema import (
    SchemaProblem,
    normalize_schema,
    parse_json,
    synthesize,
    validation_error,
)

ITEMS = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}},
         "required": ["items"], "additionalProperties": False}  # fmt: skip


@pytest.fixture
def mock(server, monkeypatch):
    point_llm_at(server, monkeypatch, anthropic=True)
    monkeypatch.setenv("FANFLOW_LLM_CACHE", "0")
    monkeypatch.delenv("FANFLOW_LLM_MODEL", raising=False)
    monkeypatch.delenv("FANFLOW_LIMITS", raising=False)
    return server


def llm(node_id: str, **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "llm", "params": params}


# --------------------------------------------------------------------------- schema unit


def test_short_form_expands_to_a_strict_object_schema():
    schema = normalize_schema({"title": "string", "tags": "string[]", "score": "number?",
                               "author": {"name": "str"}})  # fmt: skip
    assert schema["required"] == ["title", "tags", "author"]
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert schema["properties"]["author"]["properties"]["name"] == {"type": "string"}
    assert schema["additionalProperties"] is False
    assert normalize_schema(ITEMS) is ITEMS  # a JSON Schema is kept as written


def test_bad_schemas_name_their_path():
    with pytest.raises(SchemaProblem) as exc:
        normalize_schema({"title": "strnig"})
    assert exc.value.path == "$.title"
    with pytest.raises(SchemaProblem) as exc:
        normalize_schema({"type": "object", "properties": {"a": {"type": "strin"}}})
    assert "properties" in exc.value.path


def test_validation_error_names_value_and_schema_paths():
    problem = validation_error({"items": ["a", 3]}, ITEMS)
    assert problem is not None
    assert "$.items[1]" in problem and "is not of type 'string'" in problem
    assert "properties/items/items/type" in problem
    assert validation_error({"items": []}, ITEMS) is None


def test_parse_json_is_strict_but_takes_a_fence():
    assert parse_json('```json\n{"a": 1}\n```') == {"a": 1}
    for bad in ('{"a": NaN}', "{oops", "Sure: {}"):
        with pytest.raises(ValueError):
            parse_json(bad)


@pytest.mark.parametrize(
    "schema",
    [
        ITEMS,
        {"type": "array", "items": {"type": "integer", "minimum": 3, "maximum": 5}, "minItems": 2},
        {
            "type": "object",
            "properties": {
                "k": {"enum": ["x", "y"]},
                "n": {"type": ["null", "number"]},
                "s": {"type": "string", "minLength": 200},
            },
        },
        {
            "$defs": {
                "p": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}},
                    "required": ["id"],
                }
            },
            "type": "object",
            "properties": {"people": {"type": "array", "items": {"$ref": "#/$defs/p"}}},
        },
        normalize_schema({"title": "string", "tags": "string[]", "ok": "boolean"}),
    ],
)
def test_synthesized_values_satisfy_their_schema(schema):
    value = synthesize(schema, "Topics:\n- alpha\n- beta\n")
    assert validation_error(value, schema) is None


# --------------------------------------------------------------------------- against the mock


def test_structured_output_feeds_a_batch(mock):
    doc = wf(
        [
            llm("extract", prompt="Topics:\n- alpha\n- beta\n- gamma", output_schema=ITEMS),
            {**llm("each", prompt="About ${item}"),
             "batch": {"items": "${extract.response.items}", "parallel": True}},
        ],
        outputs={"topics": {"source": "${extract.response.items}"},
                 "answers": {"source": "${each.results}"}},
    )  # fmt: skip
    res = fanflow.run(doc)
    assert res.ok, res.error
    assert res.outputs["topics"] == ["alpha", "beta", "gamma"]
    assert [a["response"] for a in res.outputs["answers"]] == [
        "echo: About alpha", "echo: About beta", "echo: About gamma"]  # fmt: skip
    first = mock.stats()["requests"][0]
    assert first["structured"] == "json_schema"  # sent natively


def test_invalid_json_is_repaired_once(mock):
    doc = wf([llm("extract", prompt="[bad_json=1] Topics:\n- alpha", output_schema=ITEMS)],
             outputs={"r": {"source": "${extract.response}"}, "u": {"source": "${extract.llm_usage}"}})  # fmt: skip
    res = fanflow.run(doc)
    assert res.ok, res.error
    assert res.outputs["r"] == {"items": ["alpha"]}
    assert res.outputs["u"]["requests"] == 2
    assert mock.stats()["total"] == 2


def test_repair_that_fails_names_node_reason_and_excerpt(mock):
    doc = wf([llm("extract", prompt="[bad_json=2] Topics", output_schema=ITEMS)])
    res = fanflow.run(doc)
    assert not res.ok
    assert res.failed_node == "extract"
    assert "llm node 'extract'" in res.error and "not valid JSON" in res.error
    assert "after 1 repair attempt" in res.error and "Sure! Here is the JSON" in res.error
    assert mock.stats()["total"] == 2  # not retried by the engine: the repair was the retry


def test_schema_mismatch_names_the_schema_path(mock):
    res = fanflow.run(wf([llm("extract", prompt="[mismatch=2] x", output_schema=ITEMS)]))
    assert not res.ok
    assert "does not satisfy output_schema at $" in res.error
    assert "is not of type 'object'" in res.error and "(schema: type)" in res.error


def test_non_object_root_is_wrapped_and_unwrapped(mock):
    schema = {"type": "array", "items": {"type": "string"}}
    doc = wf([llm("x", prompt="- a\n- b", output_schema=schema)],
             outputs={"r": {"source": "${x.response}"}})  # fmt: skip
    res = fanflow.run(doc)
    assert res.ok, res.error
    assert res.outputs["r"] == ["a", "b"]


def test_anthropic_uses_tool_mode(mock):
    doc = wf([llm("x", model="anthropic/claude-haiku-4-5", prompt="- a", output_schema={"tags": "string[]"})],
             outputs={"r": {"source": "${x.response}"}})  # fmt: skip
    res = fanflow.run(doc)
    assert res.ok, res.error
    assert res.outputs["r"] == {"tags": ["a"]}
    assert mock.stats()["requests"][0]["structured"] == "tool"


def test_bad_schema_and_bad_mock_are_validation_errors(write_wf):
    doc = wf([llm("x", prompt="p", output_schema={"type": "strin"}),
              llm("y", prompt="p", output_schema={"n": "integer"}, mock_response=['{"n": "one"}'])])  # fmt: skip
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    assert "nodes[0].params.output_schema" in res.stderr
    assert "mock_response[0] does not satisfy output_schema at $.n" in res.stderr


# --------------------------------------------------------------------------- offline


def _overlap(events: list[tuple[str, float]]) -> int:
    cur = peak = 0
    for kind, _t in sorted(events, key=lambda e: (e[1], e[0] == "item_started")):
        cur += 1 if kind == "item_started" else -1
        peak = max(peak, cur)
    return peak


class Items:
    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def on_event(self, e: Any) -> None:
        if e.kind in ("item_started", "item_finished"):
            self.events.append((e.kind, e.t))

    def close(self) -> None:
        pass


def test_echo_needs_no_key_and_obeys_limits(monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "FANFLOW_LIMITS"):
        monkeypatch.delenv(var, raising=False)
    doc = wf([{**llm("ask", model="echo", prompt="q ${item}", latency=0.1),
               "batch": {"items": list(range(6)), "parallel": True}}],
             limits={"llm:echo": {"concurrency": 2}},
             outputs={"r": {"source": "${ask.results}"}})  # fmt: skip
    seen = Items()
    res = fanflow.run(doc, listeners=[seen], summary=True)
    assert res.ok, res.error
    assert [r["response"] for r in res.outputs["r"]] == [f"echo: q {i}" for i in range(6)]
    assert res.outputs["r"][0]["llm_usage"]["provider"] == "echo"
    assert res.outputs["r"][0]["llm_usage"]["cost_usd"] == 0.0
    assert _overlap(seen.events) == 2  # really concurrent, and capped by the limit
    assert res.summary["llm"]["calls"] == 6


def test_mock_response_cycles_validates_and_needs_no_key(monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "FANFLOW_LIMITS"):
        monkeypatch.delenv(var, raising=False)
    doc = wf(
        [{**llm("m", prompt="x", mock_response=["a", "b"]),
          "batch": {"items": list(range(5)), "parallel": False}},
         llm("j", prompt="x", output_schema={"n": "integer"}, mock_response='{"n": 3}'),
         {**llm("t", prompt="x", mock_response="for ${item}"), "batch": {"items": ["p", "q"]}}],
        outputs={"m": {"source": "${m.results}"}, "j": {"source": "${j.response.n}"},
                 "t": {"source": "${t.results}"}},
    )  # fmt: skip
    res = fanflow.run(doc)
    assert res.ok, res.error
    assert [r["response"] for r in res.outputs["m"]] == ["a", "b", "a", "b", "a"]
    assert res.outputs["j"] == 3
    assert [r["response"] for r in res.outputs["t"]] == ["for p", "for q"]
    assert res.outputs["m"][0]["llm_usage"]["mocked"] is True


def test_mock_response_against_a_templated_schema_fails_at_run_time(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    doc = wf([llm("j", prompt="x", output_schema="${s}", mock_response='{"n": "three"}')],
             inputs={"s": {"type": "object"}})  # fmt: skip
    res = fanflow.run(doc, {"s": {"n": "integer"}})
    assert not res.ok
    assert "mock_response does not satisfy output_schema at $.n" in res.error


def test_wrong_provider_for_a_model_is_a_validation_error():
    for model, hint in (
        ("anthropic/gpt-4o", "openai/gpt-4o"),
        ("openai/claude-3-5-haiku", "anthropic/claude-3-5-haiku"),
    ):
        with pytest.raises(WorkflowInvalid) as exc:
            fanflow.compile_workflow(wf([llm("x", model=model, prompt="p")]))
        text = str(exc.value)
        assert "nodes[0].params.model" in text and hint in text
