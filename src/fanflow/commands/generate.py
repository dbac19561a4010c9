"""`fanflow generate "a task in words"`: an LLM writes the workflow, fanflow validates and
repairs it, and shows the plan (see fanflow.generate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fanflow.cli import _FORMAT_OPTION, _report, fail, main
from fanflow.errors import FanflowError


@click.command("generate")
@click.argument("task")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Write the workflow here (default: print it on stdout).")  # fmt: skip
@click.option("--model", default=None, help="The LLM, as in the llm node (e.g. gpt-4o-mini, anthropic/claude-sonnet-4-5).")  # fmt: skip
@click.option("--rounds", type=click.IntRange(min=1, max=10), default=3, show_default=True,
              help="LLM answers allowed in all: the first and its repairs.")  # fmt: skip
@click.option("--run", "run_after", is_flag=True, help="Run the workflow once it validates (needs -o).")  # fmt: skip
@_FORMAT_OPTION
@click.pass_context
def generate(
    ctx: click.Context, task: str, output: str | None, model: str | None, rounds: int,
    run_after: bool, output_format: str,
) -> None:  # fmt: skip
    """Ask the configured LLM for a workflow doing TASK, validated (and repaired) before it is
    printed or written, with its plan. Nothing runs unless --run is given."""
    from fanflow.compile.compiled import compile_workflow
    from fanflow.generator import GenerateFailed
    from fanflow.generator import generate as generate_workflow
    from fanflow.load.reader import parse_workflow
    from fanflow.observe.plan import build_plan, format_plan_text

    try:
        if run_after and output is None:
            raise GenerateFailed(
                "--run needs -o FILE", hint='fanflow generate "…" -o wf.json --run'
            )
        result = generate_workflow(task, model=model, rounds=rounds, path=output)
    except FanflowError as exc:
        if isinstance(exc, GenerateFailed) and exc.last is not None:
            print(json.dumps(exc.last, indent=2), file=sys.stderr)  # what it got closest to
        fail(exc, output_format)
    text = json.dumps(result.workflow, indent=2, ensure_ascii=False) + "\n"
    if output is not None:
        Path(output).write_text(text)
    plan = build_plan(compile_workflow(parse_workflow(result.workflow, output)))
    if output_format == "json":
        _report({"status": "success", "workflow": result.workflow, "file": output,
                 "rounds": result.rounds, "model": result.model, "usage": result.usage,
                 "plan": plan}, "json")  # fmt: skip
    else:
        if output is None:
            click.echo(text, nl=False)
        where = f"wrote {output}" if output else "generated"
        click.echo(f"{where}: valid after {result.rounds} answer(s) from {result.model}", err=True)
        click.echo(format_plan_text(plan), err=True)
    if run_after:
        ctx.invoke(main.get_command(ctx, "run"), workflow=output)  # type: ignore[arg-type]
