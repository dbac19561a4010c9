"""Load a workflow: file → JSON (line and column on errors) → pipeline form → IR model."""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fanflow.errors import Problem, WorkflowInvalid
from fanflow.load.model import SchemaError, SchemaInvalid, Workflow, field_path
from fanflow.load.pipeline import map_pipeline_paths

# `--data-order` on the command line: read pflow files in data order whatever their frontmatter.
_data_order_override: bool | None = None


@contextlib.contextmanager
def data_order_override(value: bool | None) -> Iterator[None]:
    """While active, `.pflow.md` files are read in data order (True) or document order (False);
    None leaves it to each file's frontmatter (`parallel: true`)."""
    global _data_order_override
    saved, _data_order_override = _data_order_override, value
    try:
        yield
    finally:
        _data_order_override = saved


def read_document(path: str | Path, *, data_order: bool | None = None) -> dict[str, Any]:
    """Read a workflow file into fanflow's IR dict: JSON as is; a `.pflow.md` file (by extension,
    or a markdown file whose content is a pflow workflow) through fanflow.load.pflow_md.
    `data_order` (pflow files only) overrides the frontmatter's `parallel:` key."""
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
    if is_pflow_markdown(path, text):
        return _read_pflow(text, path, data_order)
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


def is_pflow_markdown(path: Path, text: str) -> bool:
    if path.name.endswith(".pflow.md"):
        return True
    if path.suffix.lower() in (".md", ".markdown"):
        from fanflow.load.pflow_md import looks_like_pflow_md

        return looks_like_pflow_md(text)
    return False


def _read_pflow(text: str, path: Path, data_order: bool | None) -> dict[str, Any]:
    from fanflow.load.pflow_md import apply_data_order, read_pflow_md

    name = str(path)
    doc = read_pflow_md(text, name, path.parent)
    if data_order is None:
        data_order = _data_order_override
    ordered = data_order if data_order is not None else bool((doc.metadata or {}).get("parallel"))
    pflow_ir = apply_data_order(doc.ir) if ordered else doc.ir
    try:  # pflow IR -> fanflow IR: fanflow.load.pflow_ir (issue 13 part 2)
        translate = importlib.import_module("fanflow.load.pflow_ir").from_pflow_ir
    except ImportError:  # pragma: no cover - only before part 2 lands
        raise WorkflowInvalid(
            [Problem("this fanflow cannot run pflow workflows yet", file=name)]
        ) from None
    result: dict[str, Any] = translate(pflow_ir, name)
    meta = doc.metadata or {}
    if isinstance(meta.get("fanflow"), dict):  # settings `fanflow convert` kept (docs/pflow.md)
        result.update(meta["fanflow"])
    if doc.title and not result.get("name"):
        result["name"] = meta.get("name") if isinstance(meta.get("name"), str) else doc.title
    if doc.description and not result.get("description"):
        result["description"] = doc.description
    return result


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
    from fanflow.load.pflow_ir import from_pflow_ir, is_pflow_ir

    notes: list[str] = []
    if is_pflow_ir(doc):  # pflow's IR as pflow emits it (a JSON file or a dict)
        doc = from_pflow_ir(doc, file, notes)
    if "pipeline" in doc:
        from fanflow.load.pipeline import normalise_pipeline_with_paths

        doc, paths = normalise_pipeline_with_paths(doc, file)
    from fanflow.load.mcp_names import translate_mcp_names

    doc = translate_mcp_names(doc)  # pflow's `mcp-<server>-<tool>` nodes → `type: mcp`
    try:
        workflow = Workflow.from_dict(doc)
    except SchemaInvalid as exc:
        problems = _schema_problems(exc.errors, doc, file)
        raise WorkflowInvalid(map_pipeline_paths(problems, paths)) from None
    workflow._source = file
    workflow._pipeline_paths = paths
    workflow._notes = tuple(notes)
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
