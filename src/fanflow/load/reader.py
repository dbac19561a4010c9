"""Load a workflow: file → JSON (line and column on errors) → pipeline form → IR model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fanflow.errors import Problem, WorkflowInvalid
from fanflow.load.model import SchemaError, SchemaInvalid, Workflow, field_path
from fanflow.load.pipeline import map_pipeline_paths


def read_document(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowInvalid(
            [Problem("file not found", file=name, hint="check the path to the workflow file")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowInvalid([Problem(f"cannot read the file: {exc}", file=name)]) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowInvalid(
            [
                Problem(
                    f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                    file=name,
                    hint=_json_hint(text, exc),
                )
            ]
        ) from None
    if not isinstance(doc, dict):
        raise WorkflowInvalid(
            [Problem("a workflow must be a JSON object with 'nodes' (or 'pipeline')", file=name)]
        )
    return doc


def _json_hint(text: str, exc: json.JSONDecodeError) -> str:
    line = text.splitlines()[exc.lineno - 1] if 0 < exc.lineno <= len(text.splitlines()) else ""
    pointer = " " * (exc.colno - 1) + "^"
    hint = f"\n      {line.rstrip()}\n      {pointer}"
    if "Expecting property name" in exc.msg or "Expecting value" in exc.msg:
        hint = "look for a trailing comma or a missing value just before here" + hint
    elif "delimiter" in exc.msg:
        hint = "look for a missing comma or quote just before here" + hint
    else:
        hint = "fix the JSON syntax here" + hint
    return hint


def parse_workflow(doc: dict[str, Any], file: str | None = None) -> Workflow:
    """Validate the document's shape. Raises WorkflowInvalid listing every schema problem."""
    paths: dict[str, str] | None = None
    if "pipeline" in doc:
        from fanflow.load.pipeline import normalise_pipeline_with_paths

        doc, paths = normalise_pipeline_with_paths(doc, file)
    try:
        workflow = Workflow.from_dict(doc)
    except SchemaInvalid as exc:
        problems = _schema_problems(exc.errors, doc, file)
        raise WorkflowInvalid(map_pipeline_paths(problems, paths)) from None
    workflow._source = file
    workflow._pipeline_paths = paths
    return workflow


def _schema_problems(
    errors: list[SchemaError], doc: dict[str, Any], file: str | None
) -> list[Problem]:
    problems = []
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    for err in errors:
        loc = err.loc
        field = field_path(loc)
        node = None
        index = loc[1] if len(loc) >= 2 and loc[0] == "nodes" else None
        if isinstance(index, int) and isinstance(nodes, list) and index < len(nodes):
            node_id = nodes[index].get("id") if isinstance(nodes[index], dict) else None
            node = node_id if isinstance(node_id, str) else None
        message, hint = _describe(err)
        problems.append(Problem(message, file=file, field=field or None, node=node, hint=hint))
    return problems


def _describe(err: SchemaError) -> tuple[str, str | None]:
    if err.kind == "unknown_field":
        return "unknown field", "remove it or check its spelling (see `fanflow guide`)"
    if err.kind == "pattern" and err.loc[-1:] == ("id",):
        return (
            f"invalid node id {err.value!r}",
            "ids start with a letter or _ and contain letters, digits, _ or -",
        )
    return err.message, None


def load_workflow(source: str | Path | dict[str, Any]) -> Workflow:
    """Load and fully validate a workflow from a path or an in-memory dict."""
    from fanflow.validate.checks import check_workflow

    if isinstance(source, dict):
        workflow = parse_workflow(source, None)
    else:
        workflow = parse_workflow(read_document(source), str(source))
    check_workflow(workflow)  # raises WorkflowInvalid; compile_workflow keeps what it builds
    return workflow


def parse_source(source: str | Path | dict[str, Any]) -> Workflow:
    """Load a workflow's shape from a path or a dict, without the static checks (compiling runs
    them: `fanflow.compile.compiled.compile_workflow`)."""
    if isinstance(source, dict):
        return parse_workflow(source, None)
    return parse_workflow(read_document(source), str(source))
