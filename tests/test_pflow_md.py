"""The `.pflow.md` reader against pflow 0.16.0's own parse (recorded fixtures, tests/pflow/), its
errors, file references, data order, the writer's round trip, `fanflow convert` and the CLI habits.
pflow itself is not needed: tests/pflow/record_expected.py recorded what its parser emits."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from fanflow.errors import WorkflowInvalid
from fanflow.load.pflow_md import (
    PflowMdError,
    apply_data_order,
    data_order_plan,
    parse_pflow_md,
    read_pflow_md,
)
from fanflow.load.pflow_write import fanflow_to_pflow, write_pflow_md
from fanflow.load.reader import is_pflow_markdown, read_document

HERE = Path(__file__).parent
FIXTURES = HERE / "pflow"
EXAMPLES = HERE.parent / "examples"
HAS_TRANSLATION = importlib.util.find_spec("fanflow.load.pflow_ir") is not None
needs_translation = pytest.mark.skipif(
    not HAS_TRANSLATION, reason="fanflow.load.pflow_ir (issue 13 part 2) not there yet"
)


def _expected(md: Path) -> dict[str, Any]:
    return json.loads(md.with_name(md.name.replace(".pflow.md", ".expected.json")).read_text())


VALID = sorted(p for p in FIXTURES.glob("*.pflow.md") if "ir" in _expected(p))
INVALID = sorted((FIXTURES / "errors").glob("*.pflow.md"))


def test_fixtures_cover_the_sdist_and_the_guide() -> None:
    names = {p.name for p in VALID}
    assert {"run-searcher.pflow.md", "run-review-lenses.pflow.md"} <= names
    assert sum(n.startswith("guide-") for n in names) == 11  # every complete guide example
    assert len(INVALID) >= 12


@pytest.mark.parametrize("md", VALID, ids=lambda p: p.name)
def test_reader_emits_the_ir_pflow_emits(md: Path) -> None:
    doc = parse_pflow_md(md.read_text())
    got = {
        "ir": doc.ir,
        "title": doc.title,
        "description": doc.description,
        "metadata": doc.metadata,
    }
    assert json.loads(json.dumps(got)) == _expected(md)


@pytest.mark.parametrize("md", INVALID, ids=lambda p: p.name)
def test_reader_rejects_what_pflow_rejects_at_the_same_place(md: Path) -> None:
    expected = _expected(md)
    assert "error" in expected
    with pytest.raises(PflowMdError) as info:
        parse_pflow_md(md.read_text())
    err = info.value
    assert err.hint
    if expected["line"] is not None:  # ours may point further in: at the item, not the heading
        assert err.line is not None and err.line >= expected["line"]
    else:
        assert "Steps" in err.message or err.line is not None


def test_error_names_file_line_step_and_fix() -> None:
    path = FIXTURES / "errors" / "no-type.pflow.md"
    with pytest.raises(WorkflowInvalid) as info:
        read_document(path)
    (problem,) = info.value.problems
    assert (problem.file, problem.field, problem.node) == (str(path), "line 5", "a")
    assert "- type: shell" in (problem.hint or "")
    assert f"{path}:line 5 (node 'a'): step 'a' has no type" in info.value.format()


def test_error_line_points_at_the_bad_parameter() -> None:
    text = "# T\n\n## Steps\n\n### a\n\nA step.\n\n- type: shell\n- next: nowhere\n"
    with pytest.raises(PflowMdError) as info:
        parse_pflow_md(text)
    assert (info.value.line, info.value.node) == (10, "a")
    assert "nowhere" in info.value.message and "a" in (info.value.hint or "")


def test_yaml_error_line_inside_a_multiline_param() -> None:
    text = "# T\n\n## Steps\n\n### a\n\nA step.\n\n- type: shell\n- env:\n    A: [1\n    B: 2\n"
    with pytest.raises(PflowMdError) as info:
        parse_pflow_md(text)
    assert info.value.node == "a" and info.value.line is not None and info.value.line >= 10


def test_file_references_are_read_relative_to_the_workflow(tmp_path: Path) -> None:
    md = FIXTURES / "edge-fileref.pflow.md"
    doc = read_pflow_md(md.read_text(), str(md), md.parent)
    (node,) = doc.ir["nodes"]
    assert node["params"]["prompt"] == "Say ${item}.\n"
    assert node["batch"] == {"items": ["a", "b"], "parallel": True}
    assert node["_source_files"] == {"prompt": "./prompt.md", "batch": "./items.yaml"}
    with pytest.raises(WorkflowInvalid) as info:
        read_pflow_md(md.read_text(), "elsewhere.pflow.md", tmp_path)
    (problem,) = info.value.problems
    assert problem.node == "ask" and problem.field == "line 10" and "./prompt.md" in problem.message


def test_markdown_with_another_name_is_recognised_by_content(tmp_path: Path) -> None:
    flow = tmp_path / "flow.md"
    flow.write_text((FIXTURES / "edge-fanout.pflow.md").read_text())
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\n## Steps to reproduce\n\n1. run it\n")
    assert is_pflow_markdown(flow, flow.read_text())
    assert not is_pflow_markdown(notes, notes.read_text())
    assert is_pflow_markdown(Path("x.pflow.md"), "")


FANOUT = """---
parallel: true
---
# Fan-out

## Inputs

### word

A word.

- type: string

## Steps

### a

A.

- type: shell
- command: echo a ${word}

### b

B.

- type: shell
- command: echo b ${word}

### join

Join.

- type: shell
- command: echo ${a.stdout} ${b.stdout}
- on-error: fix

### fix

Fix.

- type: shell
- command: echo fix
- next: end
"""


def test_data_order_edges_follow_the_data_and_keep_routes() -> None:
    doc = parse_pflow_md(FANOUT)
    assert {(e["from"], e["to"]) for e in doc.ir["edges"] if "action" not in e} == {
        ("a", "b"),
        ("b", "join"),
        ("join", "fix"),  # pflow: a router falls through into its handler on success
    }
    edges = apply_data_order(doc.ir)["edges"]
    assert edges == [
        {"from": "join", "to": "fix", "action": "error"},
        {"from": "join", "to": "fix"},
        {"from": "a", "to": "join"},
        {"from": "b", "to": "join"},
    ]


def test_data_order_plan_shows_levels_critical_path_and_speedup() -> None:
    p = data_order_plan(parse_pflow_md(FANOUT).ir)
    assert p["levels"] == [["a", "b"], ["join"], ["fix"]]
    assert p["critical_path"] == ["a", "join", "fix"]
    assert p["speedup"] == pytest.approx(4 / 3)
    chain = parse_pflow_md((FIXTURES / "run-searcher.pflow.md").read_text()).ir
    assert data_order_plan(chain)["speedup"] == 1.0


def test_plan_text_for_a_pflow_file_in_document_order(tmp_path: Path) -> None:
    from fanflow.commands.plan import _format_data_order, _pflow_data_order

    wf = tmp_path / "fan.pflow.md"
    wf.write_text(FANOUT.replace("parallel: true", "name: fan"))
    info = _pflow_data_order(str(wf), None)
    assert info is not None
    text = _format_data_order(info)
    assert "together: a, b" in text and "up to 1.33x" in text
    assert _pflow_data_order(str(wf), True) is None  # already data order: nothing to suggest
    assert _pflow_data_order(str(EXAMPLES / "fan-out-diamond.json"), None) is None


def _norm(ir: dict[str, Any]) -> dict[str, Any]:
    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            if "from" in o:
                o = {"action": "default", **o}
            return {k: strip(v) for k, v in o.items() if not k.startswith("_")}
        if isinstance(o, list):
            return [strip(x) for x in o]
        return o

    out = strip(ir)
    out["edges"] = sorted(json.dumps(e, sort_keys=True) for e in out.get("edges", []))
    return out


@pytest.mark.parametrize("md", VALID, ids=lambda p: p.name)
def test_writer_round_trip_keeps_the_ir(md: Path) -> None:
    doc = parse_pflow_md(md.read_text())
    text = write_pflow_md(
        doc.ir, title=doc.title, description=doc.description, metadata=doc.metadata
    )
    back = parse_pflow_md(text)
    assert _norm(back.ir) == _norm(doc.ir)
    assert (back.title, back.description, back.metadata) == (
        doc.title,
        doc.description,
        doc.metadata,
    )


def test_writer_values_read_back_with_their_types() -> None:
    params = {
        "command": "echo 'a: b' # not a comment",
        "n": "12",
        "yes": "true",
        "flag": True,
        "f": 1e-05,
        "nested": {"a": [1, "${x.y}"], "b": None},
        "empty": "",
        "multi": "line1\n```\nline3\n",
        "code": "x: int = 1\nresult: int = x\n",
    }
    ir = {"nodes": [{"id": "a", "type": "code", "purpose": "A.", "params": params}], "edges": []}
    back = parse_pflow_md(write_pflow_md(ir)).ir["nodes"][0]["params"]
    assert back == params
    assert [type(v) for v in back.values()] == [type(v) for v in params.values()]


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_fanflow_json_to_markdown_keeps_nodes_and_edges(example: Path) -> None:
    from fanflow.commands.convert import _to_markdown
    from fanflow.load.pipeline import normalise_pipeline

    doc = json.loads(example.read_text())
    if "pipeline" in doc:
        doc = normalise_pipeline(doc, str(example))
    try:
        text = _to_markdown(doc, str(example))
    except WorkflowInvalid as exc:  # a clean refusal, naming the step and the reason
        (problem,) = exc.problems
        assert problem.file == str(example) and problem.node and problem.hint
        return
    back = parse_pflow_md(text)
    want, _meta = fanflow_to_pflow(doc)
    for node in want["nodes"]:
        node.setdefault("purpose", f"Step {node['id']}.")  # markdown requires a description
    assert [{k: v for k, v in n.items() if not k.startswith("_")} for n in back.ir["nodes"]] == [
        {k: v for k, v in n.items() if not k.startswith("_")} for n in want["nodes"]
    ]
    meta = back.metadata or {}
    edges = meta.get("fanflow", {}).get("edges")
    if edges is not None:  # routing markdown cannot say, kept for fanflow
        assert edges == want["edges"]
    elif meta.get("parallel"):
        got = apply_data_order(back.ir)["edges"]
        assert _norm({"edges": got})["edges"] == _norm({"edges": want["edges"]})["edges"]
    elif want["edges"]:
        assert _norm(back.ir)["edges"] == _norm(want)["edges"]


def test_convert_cli_refuses_same_format_and_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    out.write_text("{}")
    r = run_cli("convert", str(EXAMPLES / "fan-out-diamond.json"), str(out))
    assert r.code == 2 and "both sides are JSON" in r.stderr
    md = tmp_path / "x.pflow.md"
    r = run_cli("convert", str(EXAMPLES / "fan-out-diamond.json"), str(md))
    assert r.code == 0 and md.read_text().startswith("---\n")
    r = run_cli("convert", str(EXAMPLES / "fan-out-diamond.json"), str(md))
    assert r.code == 2 and "--force" in r.stderr


def test_implicit_run_inserts_the_run_word(tmp_path: Path) -> None:
    from fanflow.cli import implicit_run, main

    wf = tmp_path / "w.pflow.md"
    wf.write_text("x")
    assert implicit_run([str(wf), "a=1"], main) == ["run", str(wf), "a=1"]
    assert implicit_run(["--output-format", "json", "-p", str(wf)], main)[0] == "run"
    assert implicit_run(["plan", str(wf)], main) == ["plan", str(wf)]
    assert implicit_run(["missing.pflow.md"], main) == ["missing.pflow.md"]


def test_run_without_the_run_word_and_with_p_is_quiet(tmp_path: Path) -> None:
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"ir_version": "0.1.0", "nodes": [
        {"id": "a", "type": "shell", "params": {"command": "echo hi"}}]}))  # fmt: skip
    quiet = run_cli(str(wf), "-p")
    loud = run_cli("run", str(wf))
    assert quiet.code == loud.code == 0
    assert quiet.stdout.strip() == loud.stdout.strip()
    assert quiet.stderr.strip() == "" and loud.stderr.strip() != ""


def test_stdin_input_is_found_in_both_formats(tmp_path: Path) -> None:
    from fanflow.cli import _stdin_input

    assert _stdin_input(str(FIXTURES / "edge-routing.pflow.md")) == "data"
    assert _stdin_input(str(FIXTURES / "edge-fanout.pflow.md")) is None
    wf = tmp_path / "w.json"
    wf.write_text(json.dumps({"inputs": {"x": {"type": "string", "stdin": True}}, "nodes": []}))
    assert _stdin_input(str(wf)) == "x"


@needs_translation
def test_pflow_file_runs_in_both_orders_with_the_same_outputs(tmp_path: Path) -> None:
    wf = tmp_path / "fan.pflow.md"
    wf.write_text(FANOUT.replace("parallel: true", "name: fan"))
    seq = run_cli(wf.as_posix(), "word=x", "-p", "--output-format", "json")
    par = run_cli(wf.as_posix(), "word=x", "-p", "--output-format", "json", "--data-order")
    assert seq.code == par.code == 0, seq.stderr + par.stderr
    assert json.loads(seq.stdout)["status"] == "success"
    assert json.loads(seq.stdout).get("outputs") == json.loads(par.stdout).get("outputs")


@needs_translation
def test_convert_markdown_to_json_and_back(tmp_path: Path) -> None:
    js = tmp_path / "fan.json"
    r = run_cli("convert", str(FIXTURES / "edge-fanout.pflow.md"), str(js))
    assert r.code == 0, r.stderr
    md = tmp_path / "fan.pflow.md"
    assert run_cli("convert", str(js), str(md)).code == 0
    assert read_document(md)["nodes"] == json.loads(js.read_text())["nodes"]


def test_read_document_dispatches_pflow_files_to_the_translation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    from fanflow.load.reader import data_order_override

    seen: list[tuple[dict[str, Any], str | None]] = []

    def from_pflow_ir(doc: dict[str, Any], file: str | None) -> dict[str, Any]:
        seen.append((doc, file))
        return {"nodes": [{"id": n["id"]} for n in doc["nodes"]], "edges": doc["edges"]}

    fake = types.ModuleType("fanflow.load.pflow_ir")
    fake.from_pflow_ir = from_pflow_ir  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fanflow.load.pflow_ir", fake)
    wf = tmp_path / "flow.md"  # recognised by content
    wf.write_text(FANOUT.replace("parallel: true", "fanflow:\n  max_concurrent: 3"))
    doc = read_document(wf)
    ir, file = seen[-1]
    assert file == str(wf) and ir["nodes"][0]["_source_line"] == 17
    assert {"from": "a", "to": "b"} in doc["edges"]  # document order
    assert (doc["max_concurrent"], doc["name"], doc.get("description")) == (3, "Fan-out", None)
    with data_order_override(True):
        doc = read_document(wf)
    assert {"from": "a", "to": "b"} not in doc["edges"] and {"from": "a", "to": "join"} in doc[
        "edges"
    ]
    wf.write_text(FANOUT)  # frontmatter `parallel: true`; the flag still wins
    assert {"from": "a", "to": "join"} in read_document(wf)["edges"]
    assert {"from": "a", "to": "b"} in read_document(wf, data_order=False)["edges"]


def test_mutated_workflows_parse_or_fail_as_pflow_does() -> None:
    """600 random edits (deleted, inserted, truncated lines) of the fixtures: where pflow's parser
    accepts, the IR is the same (by digest); where it refuses, so does ours, at its line or later."""
    import sys

    sys.path.insert(0, str(FIXTURES))
    from mutations import cases, digest

    recorded = json.loads((FIXTURES / "mutations.expected.json").read_text())
    wrong = []
    for i, (text, want) in enumerate(
        zip(cases(recorded["files"]), recorded["expected"], strict=True)
    ):
        try:
            doc = parse_pflow_md(text)
        except PflowMdError as exc:
            ok = "error" in want and (want["line"] is None or (exc.line or 0) >= want["line"])
        else:
            result = {"ir": doc.ir, "description": doc.description, "metadata": doc.metadata}
            ok = want.get("ir") == digest(json.loads(json.dumps(result, default=str)))
        if not ok:
            wrong.append(i)
    assert wrong == []
