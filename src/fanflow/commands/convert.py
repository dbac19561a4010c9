"""`fanflow convert IN OUT`: between pflow's `.pflow.md` and fanflow's JSON, both ways.

The direction follows the names: IN a `.pflow.md` (or a markdown pflow workflow) → OUT fanflow
JSON; IN a JSON workflow → OUT `.pflow.md`. `-` as OUT writes to stdout. A round trip keeps the
workflow's meaning (tests/test_pflow_md.py); what markdown cannot say is refused with a reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("convert")
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("dest", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
def convert(source: str, dest: str, force: bool) -> None:
    """Convert SOURCE (.pflow.md or .json) into DEST (.json or .pflow.md)."""
    from fanflow.cli import fail
    from fanflow.errors import FanflowError, Problem, WorkflowInvalid

    try:
        text = _convert(source, dest)
        if dest == "-":
            sys.stdout.write(text)
            return
        out = Path(dest)
        if out.exists() and not force:
            raise WorkflowInvalid(
                [Problem("already exists", file=dest, hint="pass --force to overwrite it")]
            )
        out.write_text(text, encoding="utf-8")
    except FanflowError as exc:
        fail(exc)
    click.echo(f"{source} -> {dest}", err=True)


def _is_markdown(name: str) -> bool:
    return name.endswith((".md", ".markdown"))


def _convert(source: str, dest: str) -> str:
    from fanflow.errors import Problem, WorkflowInvalid
    from fanflow.load.reader import is_pflow_markdown, read_document

    src = Path(source)
    to_markdown = _is_markdown(dest) if dest != "-" else None
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""  # read_document reports it with the usual wording
    from_markdown = is_pflow_markdown(src, text) if text else _is_markdown(source)
    if to_markdown is None:
        to_markdown = not from_markdown
    if from_markdown and to_markdown:
        raise WorkflowInvalid(
            [Problem("both sides are markdown", file=dest, hint="name DEST *.json")]
        )
    if not from_markdown and not to_markdown:
        raise WorkflowInvalid(
            [Problem("both sides are JSON", file=dest, hint="name DEST *.pflow.md")]
        )
    doc = read_document(src)
    if from_markdown:
        doc.setdefault("ir_version", "0.1.0")
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return _to_markdown(doc, source)


def _to_markdown(doc: dict[str, object], source: str) -> str:
    from fanflow.load.pflow_write import (
        ConvertError,
        convert_problem,
        fanflow_to_pflow,
        write_pflow_md,
    )
    from fanflow.load.reader import parse_workflow

    parse_workflow(dict(doc), source)  # a valid fanflow workflow first (raises WorkflowInvalid)
    if "pipeline" in doc:
        from fanflow.load.pipeline import normalise_pipeline

        doc = normalise_pipeline(doc, source)
    ir, meta = fanflow_to_pflow(dict(doc))
    from fanflow.load.pflow_md import PflowMdError, parse_pflow_md

    try:
        text = write_pflow_md(ir, metadata=meta, keep_edges=True)
    except ConvertError as exc:
        raise convert_problem(exc, source) from None
    try:  # what pflow's rules would refuse is refused here, not left for the next reader
        parse_pflow_md(text)
    except PflowMdError as exc:
        raise convert_problem(
            ConvertError(
                f"the .pflow.md would not read back: {exc.message}",
                node=exc.node,
                hint="keep this workflow in JSON",
            ),
            source,
        ) from None
    return text
