"""`fanflow plan WORKFLOW [--format text|json|mermaid]`: the static schedule, before running."""

from __future__ import annotations

import json

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
def plan(workflow: str, fmt: str, normalised: bool) -> None:
    """Show what can run in parallel: dependency levels, fan-outs, joins, branches, loops."""
    from fanflow._gc import gc_paused

    with gc_paused():
        _plan(workflow, fmt, normalised)


def _plan(workflow: str, fmt: str, normalised: bool) -> None:
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
    if fmt == "json":
        click.echo(format_plan_json(data))
    elif fmt == "mermaid":
        click.echo(format_plan_mermaid(data))
        for warning in data["warnings"]:  # stdout stays a valid diagram
            click.echo(f"warning: {warning}", err=True)
    else:
        click.echo(format_plan_text(data))
