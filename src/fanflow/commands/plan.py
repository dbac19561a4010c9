"""`fanflow plan WORKFLOW [--format text|json|mermaid]`: the static schedule, before running."""

from __future__ import annotations

import json
from typing import Any

import click


@click.command("plan")
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "--output-format",
    "fmt",
    type=click.Choice(["text", "json", "mermaid"]),
    default="text",
    show_default=True,
    help="text for people, json for programs, mermaid for a flowchart of the graph.",
)
@click.option(
    "--normalised",
    is_flag=True,
    help="Print the workflow as nodes + edges (e.g. what a `pipeline` form normalises into).",
)
@click.option(
    "--data-order",
    is_flag=True,
    default=None,
    help="pflow files: plan them ordered by the data steps read, not document order.",
)
def plan(workflow: str, fmt: str, normalised: bool, data_order: bool | None) -> None:
    """Show what can run in parallel: dependency levels, fan-outs, joins, branches, loops."""
    from fanflow._gc import gc_paused
    from fanflow.load.reader import data_order_override

    with gc_paused(), data_order_override(data_order):
        _plan(workflow, fmt, normalised, data_order)


def _pflow_data_order(workflow: str, data_order: bool | None) -> dict[str, Any] | None:
    """For a pflow file run in document order: what data order would run together, and the
    expected speedup from the critical path (in steps)."""
    from pathlib import Path

    from fanflow.load.reader import is_pflow_markdown

    path = Path(workflow)
    text = path.read_text(encoding="utf-8")
    if not is_pflow_markdown(path, text):
        return None
    from fanflow.load.pflow_md import data_order_plan, parse_pflow_md

    doc = parse_pflow_md(text)  # read_document already succeeded: no error here
    if data_order or (data_order is None and (doc.metadata or {}).get("parallel")):
        return None
    result = data_order_plan(doc.ir)
    result.pop("edges")
    return result


def _format_data_order(d: dict[str, Any]) -> str:
    together = [level for level in d["levels"] if len(level) > 1]
    lines = ["", "pflow document order runs every step one after another. In data order",
             "(--data-order, or `parallel: true` in the frontmatter):"]  # fmt: skip
    if together:
        lines += [f"  together: {', '.join(level)}" for level in together]
    else:
        lines.append("  nothing would run in parallel: each step reads the one before it")
    path = " -> ".join(d["critical_path"])
    lines.append(f"  critical path: {path} ({len(d['critical_path'])} of {d['steps']} steps)")
    lines.append(f"  expected speedup: up to {d['speedup']:.2f}x (equal step durations)")
    return "\n".join(lines)


def _plan(workflow: str, fmt: str, normalised: bool, data_order: bool | None) -> None:
    from fanflow.cli import fail
    from fanflow.compile.compiled import compile_workflow
    from fanflow.errors import FanflowError
    from fanflow.observe.plan import (
        build_plan,
        format_plan_json,
        format_plan_mermaid,
        format_plan_text,
    )

    try:
        wf = compile_workflow(workflow)
    except FanflowError as exc:
        fail(exc, "json" if fmt == "json" else "text")
    if normalised:
        from fanflow.load.pipeline import normalise_pipeline
        from fanflow.load.reader import read_document

        click.echo(json.dumps(normalise_pipeline(read_document(workflow), workflow), indent=2))
        return
    data = build_plan(wf)
    pflow = _pflow_data_order(workflow, data_order)
    if fmt == "json":
        if pflow is None:
            click.echo(format_plan_json(data))
        else:
            click.echo(
                json.dumps({**json.loads(format_plan_json(data)), "pflow_data_order": pflow})
            )
    elif fmt == "mermaid":
        click.echo(format_plan_mermaid(data))
        for warning in data["warnings"]:  # stdout stays a valid diagram
            click.echo(f"warning: {warning}", err=True)
    else:
        click.echo(format_plan_text(data))
        if pflow is not None:
            click.echo(_format_data_order(pflow))
