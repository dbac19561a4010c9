"""The command line: a thin layer over the Python API (fanflow.run, fanflow.load_workflow).

Exit codes: 0 success, 1 the run failed, 2 invalid workflow or command line, 130 interrupted.
Data goes to stdout; progress and messages go to stderr. Subcommands other than run/validate
live in fanflow.commands and are imported only when used.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

from fanflow import __version__
from fanflow.errors import EXIT_INTERRUPTED, FanflowError, WorkflowInvalid

LAZY_COMMANDS = {
    "plan": ("fanflow.commands.plan:plan", "Show the static schedule: what can run in parallel."),
    "runs": ("fanflow.commands.runs:runs", "List, inspect and prune stored runs."),
    "guide": ("fanflow.commands.guide:guide", "Print the workflow authoring guide for AI agents."),
    "nodes": ("fanflow.commands.nodes:nodes", "List node types, or describe one."),
    "timeline": ("fanflow.commands.timeline:timeline", "Render a trace file as an HTML timeline."),
    "schema": ("fanflow.cli:schema", "Print the JSON Schema of the workflow format."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, _, attr = LAZY_COMMANDS[name][0].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, c.get_short_help_str()) for n, c in self.commands.items()]
        rows += [(n, help_text) for n, (_, help_text) in LAZY_COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fanflow")
def main() -> None:
    """fanflow: run JSON workflows of shell, file, HTTP, LLM and Python nodes, in parallel
    wherever their dependencies allow."""


def fail(exc: FanflowError, output_format: str = "text") -> None:
    """Report a user error without a traceback and exit with its documented code."""
    if output_format == "json":
        payload: dict[str, Any] = {"status": "invalid", "error": str(exc)}
        if isinstance(exc, WorkflowInvalid):
            payload["problems"] = [p.to_dict() for p in exc.problems]
        click.echo(json.dumps(payload))
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


@main.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
def validate(workflow: str) -> None:
    """Run every static check on WORKFLOW; execute nothing."""
    from fanflow.compile.compiled import compile_workflow
    from fanflow.load.reader import parse_source

    try:
        compiled = compile_workflow(parse_source(workflow))
    except FanflowError as exc:
        fail(exc)
    for warning in compiled.warnings:
        click.echo(f"warning: {warning}", err=True)
    nodes, edges = len(compiled.graph.ids), len(compiled.graph.edges)
    click.echo(f"{workflow}: valid ({nodes} nodes, {edges} edges)")


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=None,
    help="Global cap on running node executions and batch items (default 256).",
)
@click.option(
    "--output-format",
    type=click.Choice(["text", "json"]),
    default="text",
    help="json prints one JSON object on stdout.",
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a Chrome Trace Event file (open in Perfetto).",
)
@click.option(
    "--timeline",
    "timeline_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write an HTML timeline (Gantt chart) of the run.",
)
@click.option(
    "--limit",
    "limit_specs",
    multiple=True,
    metavar="RESOURCE=SPEC",
    help="Override a resource limit, e.g. llm:openai=10/600rpm (repeatable).",
)
@click.option(
    "--resume",
    "resume_ref",
    default=None,
    metavar="RUN_ID|last",
    help="Resume a stored run: re-run only what did not complete.",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(),
    default=None,
    help="Run store: a runs.db file or its folder (default .fanflow/ or $FANFLOW_HOME).",
)
@click.option("--no-checkpoint", is_flag=True, help="Do not record this run in the run store.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def run(
    workflow: str, inputs: tuple[str, ...], max_concurrent: int | None, output_format: str,
    trace_path: str | None, timeline_path: str | None, limit_specs: tuple[str, ...],
    resume_ref: str | None, store_path: str | None, no_checkpoint: bool, quiet: bool,
) -> None:  # fmt: skip
    """Run WORKFLOW with inputs given as name=value."""
    import fanflow
    from fanflow.validate.inputs import parse_cli_pairs

    try:
        pairs = parse_cli_pairs(inputs)
        result = fanflow.run(
            workflow, pairs if pairs or not resume_ref else None, inputs_from_text=True,
            max_concurrent=max_concurrent, limits=limit_specs,
            store=None if no_checkpoint and not resume_ref else _store(store_path),
            checkpoint=not no_checkpoint,
            resume=resume_ref, trace=trace_path, timeline=timeline_path,
            progress=None if quiet else sys.stderr, summary=True, handle_signals=True,
        )  # fmt: skip
    except FanflowError as exc:
        fail(exc, output_format)
    except Exception as exc:  # a bug (ours, or a custom node's or listener's): no traceback
        message = f"internal error: {type(exc).__name__}: {exc}"
        if output_format == "json":
            click.echo(json.dumps({"status": "failed", "error": message}))
        click.echo(f"error: {message} (set FANFLOW_DEBUG=1 for the traceback)", err=True)
        if os.environ.get("FANFLOW_DEBUG"):
            raise
        _exit(1)
    if output_format == "json":
        click.echo(json.dumps(result.to_json(), default=str))
    else:
        for name, value in result.outputs.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            click.echo(f"{name}: {text}" if len(result.outputs) > 1 else text)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.summary_text and not quiet:
        click.echo(result.summary_text, err=True)
    if result.status == "failed":
        click.echo(f"error: {result.error}", err=True)
    code = {"success": 0, "failed": 1, "cancelled": EXIT_INTERRUPTED}[result.status]
    _exit(code)


def _store(path: str | None) -> Any:
    from fanflow.store.runs import RunStore

    return RunStore(Path(path) if path else None)


def _exit(code: int) -> None:
    """Exit now even if a cancelled sync node's thread is still busy (threads can't be killed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.name.startswith("fanflow") and t.is_alive() for t in threading.enumerate()):
        os._exit(code)
    sys.exit(code)


@click.command()
def schema() -> None:
    """Print the JSON Schema of the workflow format (for editors and agents)."""
    from fanflow.load.model import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
