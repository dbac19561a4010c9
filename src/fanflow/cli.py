"""The command line: a thin layer over the Python API (fanflow.run, fanflow.load_workflow).

Exit codes: 0 success, 1 the run failed, 2 invalid workflow or command line, 130 interrupted.
Data goes to stdout; progress and messages go to stderr. With `--output-format json` every exit,
click's own usage errors included, prints one JSON object on stdout (docs/cli.md). Subcommands
other than run/validate live in fanflow.commands and are imported only when used.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from fanflow import __version__
from fanflow.errors import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_RUN_FAILED,
    FanflowError,
    Problem,
    WorkflowInvalid,
)

LAZY_COMMANDS = {
    "plan": ("fanflow.commands.plan:plan", "Show the static schedule: what can run in parallel."),
    "runs": ("fanflow.commands.runs:runs", "List, inspect and prune stored runs."),
    "guide": ("fanflow.commands.guide:guide", "Print the workflow authoring guide for AI agents."),
    "nodes": ("fanflow.commands.nodes:nodes", "List node types, or describe one."),
    "timeline": ("fanflow.commands.timeline:timeline", "Render a trace file as an HTML timeline."),
    "schema": ("fanflow.cli:schema", "Print the JSON Schema of the workflow format."),
    "convert": ("fanflow.commands.convert:convert", "Convert between .pflow.md and JSON."),
    "generate": (
        "fanflow.commands.generate:generate",
        "Have an LLM write a workflow; validated and repaired.",
    ),
    "mcp": ("fanflow.commands.mcp:mcp", "Serve fanflow to agents over MCP (`fanflow mcp serve`)."),
}


class CommandFailed(FanflowError, click.ClickException):
    """A subcommand's user-facing failure that is not about a workflow (an unknown run id, an
    unknown node type): reported like any FanflowError, in JSON when JSON was asked for. A
    ClickException too, so a command invoked on its own (click's testing) reports it as well."""

    def __init__(self, message: str, exit_code: int = EXIT_INVALID, hint: str | None = None):
        click.ClickException.__init__(self, message)
        self.exit_code = exit_code
        self.hint = hint

    def show(self, file: Any = None) -> None:
        hint = f"\n    hint: {self.hint}" if self.hint else ""
        click.echo(f"error: {self.message}{hint}", err=True)


def wants_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for JSON output (`--output-format json`, `=json`, or plan's
    `--format json`; the last one given wins, as in click). Read from argv because click's usage
    errors happen before it has parsed anything."""
    found = None
    words = list(argv)
    for i, word in enumerate(words):
        if word == "--":
            break
        name, eq, value = word.partition("=")
        if name in ("--output-format", "--format"):
            found = value if eq else (words[i + 1] if i + 1 < len(words) else None)
    return found == "json"


_VALUE_OPTIONS = {"--output-format", "--max-concurrent", "--trace", "--timeline", "--limit",
                  "--resume", "--store", "--provider", "--providers"}  # fmt: skip


def implicit_run(argv: list[str], group: click.Group) -> list[str]:
    """pflow's habit: `fanflow x.pflow.md key=value` (no `run` word). An existing file as the
    first argument, after any options, means `run`."""
    names = {*group.commands, *LAZY_COMMANDS}
    for i, word in enumerate(argv):
        if word == "--":
            return argv
        if word.startswith("-"):
            continue
        if i > 0 and argv[i - 1] in _VALUE_OPTIONS:
            continue
        if word not in names and Path(word).is_file():
            return ["run", *argv]
        return argv
    return argv


def _piped() -> bool:
    try:
        return sys.stdin is not None and not sys.stdin.isatty()
    except (OSError, ValueError):  # closed
        return False


def _stdin_input(workflow: str) -> str | None:
    """The input a workflow declares with `stdin: true` (pflow's piped-data input), if any."""
    path = Path(workflow)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # the loader reports it
    from fanflow.load.reader import is_pflow_markdown

    try:
        if is_pflow_markdown(path, text):
            from fanflow.load.pflow_md import PflowMdError, parse_pflow_md

            try:
                inputs = parse_pflow_md(text).ir.get("inputs", {})
            except PflowMdError:
                return None
        else:
            inputs = json.loads(text).get("inputs", {})
    except (ValueError, AttributeError):
        return None
    if not isinstance(inputs, dict):
        return None
    return next(
        (k for k, v in inputs.items() if isinstance(v, dict) and v.get("stdin") is True), None
    )


class LazyGroup(click.Group):
    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's main, with every way out kept to the CLI contract (docs/cli.md): a usage
        error, a FanflowError, an interrupt or a bug anywhere ends with its documented exit code,
        one JSON object on stdout when JSON was asked for, and never a traceback."""
        if not standalone_mode:  # embedders asked for click's exceptions
            return super().main(args, prog_name, complete_var, False, **extra)
        argv = implicit_run(list(sys.argv[1:] if args is None else args), self)
        fmt = "json" if wants_json(argv) else "text"
        try:
            rv = super().main(argv, prog_name, complete_var, False, **extra)
        except click.exceptions.Abort:  # Ctrl-C outside a run (click turns it into Abort)
            _report({"status": "cancelled", "error": "interrupted"}, fmt)
            click.echo("error: interrupted", err=True)
            _exit(EXIT_INTERRUPTED)
        except FanflowError as exc:  # before ClickException: CommandFailed is both
            fail(exc, fmt)
        except click.ClickException as exc:
            _usage_error(exc, fmt)
        except Exception as exc:  # a bug (ours, or a custom node's or listener's)
            internal_error(exc, fmt)
        _exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # whoever read stdout stopped (`| head`): not our failure
            _silence_stdout()
            return 0

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


def fail(exc: FanflowError, output_format: str = "text") -> NoReturn:
    """Report a user error without a traceback and exit with its documented code. JSON:
    `{"status": "invalid", "error", "problems": [{message, file?, field?, node?, hint?}]}`
    (status "failed" for an error that is not the command line's or the workflow's: exit 1)."""
    if isinstance(exc, WorkflowInvalid):
        problems = [p.to_dict() for p in exc.problems]
    else:
        problems = [Problem(str(exc), hint=getattr(exc, "hint", None)).to_dict()]
    status = "invalid" if exc.exit_code == EXIT_INVALID else "failed"
    _report({"status": status, "error": str(exc), "problems": problems}, output_format)
    hint = getattr(exc, "hint", None)
    click.echo(f"error: {exc}" + (f"\n    hint: {hint}" if hint else ""), err=True)
    _exit(exc.exit_code)


def internal_error(exc: Exception, output_format: str = "text") -> NoReturn:
    """A bug (ours, or a custom node's or listener's): one line, no traceback unless
    FANFLOW_DEBUG is set, exit 1."""
    message = f"internal error: {type(exc).__name__}: {exc}"
    _report({"status": "failed", "error": message}, output_format)
    click.echo(f"error: {message} (set FANFLOW_DEBUG=1 for the traceback)", err=True)
    if os.environ.get("FANFLOW_DEBUG"):
        raise exc
    _exit(EXIT_RUN_FAILED)


def _usage_error(exc: click.ClickException, output_format: str) -> NoReturn:
    """click's own errors (bad option values, unknown options, missing arguments): click's text
    in text mode; in JSON mode the same object as any invalid command line, naming the option."""
    if output_format != "json":
        exc.show()
        _exit(exc.exit_code)
    problem: dict[str, str] = {"message": exc.format_message()}
    param = getattr(exc, "param", None)
    name = getattr(exc, "option_name", None) or (
        (param.opts[0] if isinstance(param, click.Option) else param.human_readable_name)
        if param is not None
        else None
    )
    if name:
        problem["field"] = name
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        problem["hint"] = f"see `{ctx.command_path} --help`"
    status = "invalid" if exc.exit_code == EXIT_INVALID else "failed"
    _report({"status": status, "error": problem["message"], "problems": [problem]}, "json")
    click.echo(f"error: {problem['message']}", err=True)
    _exit(exc.exit_code)


def _report(payload: dict[str, Any], output_format: str) -> None:
    if output_format == "json":
        _out(json.dumps(payload, default=str))


def _out(text: str) -> None:
    """Data to stdout. A reader that went away (`| head`) silences stdout and changes nothing
    else: the messages on stderr and the exit code stay the command's own."""
    try:
        click.echo(text)
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush cannot fail either."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _workflow_file(path: str) -> str:
    """A directory given as the workflow: a clear problem naming it and the files it holds."""
    p = Path(path)
    if p.is_dir():
        found = sorted(f.name for f in p.iterdir() if f.name.endswith((".json", ".pflow.md")))
        hint = ("give the workflow file itself, e.g. " + ", ".join(str(p / f) for f in found[:3])
                if found else "give the path of a workflow file (.json or .pflow.md)")  # fmt: skip
        raise WorkflowInvalid([Problem("is a directory, not a workflow file", path, hint=hint)])
    return path


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While a run runs, whatever writes to stdout (a custom node's print, a child process that
    inherits fd 1) goes to stderr: stdout carries only the run's outputs (the one JSON object)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no fd 1 (closed, or an embedder's stream): python level only
        saved = -1
    if saved >= 0:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved >= 0:
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


STORE_OPTION = click.option(
    "--store",
    "store_path",
    type=click.Path(),
    default=None,
    help="Run store: a runs.db file or its folder (default .fanflow/ or $FANFLOW_HOME).",
)
_FORMAT_OPTION = click.option(
    "--output-format",
    type=click.Choice(["text", "json"]),
    default="text",
    help="json prints one JSON object on stdout, whatever happens.",
)


_DATA_ORDER_OPTION = click.option(
    "--data-order",
    is_flag=True,
    default=None,
    help="pflow files: order steps by the data they read, not document order (runs "
    "independent steps in parallel; docs/pflow.md).",
)


def _provider_options(f: Any) -> Any:
    """--providers FILE and --provider NAME=URL (docs/llm.md, "Providers")."""
    f = click.option("--provider", "provider_flags", multiple=True, metavar="NAME=BASE_URL",
                     help="An OpenAI-compatible LLM endpoint models name as NAME/<model> "
                     "(repeatable; docs/llm.md).")(f)  # fmt: skip
    return click.option("--providers", "provider_files", multiple=True, metavar="FILE",
                        help="A JSON file of LLM providers {name: {kind, base_url, api_key_env, "
                        "default_model, headers}} (repeatable; docs/llm.md).")(f)  # fmt: skip


def _cli_providers(files: tuple[str, ...], flags: tuple[str, ...]) -> dict[str, Any] | None:
    from fanflow.io.provider_config import cli_entries

    return cli_entries(files, flags) if files or flags else None


@main.command()
@click.argument("workflow", type=click.Path())
@_FORMAT_OPTION
@_DATA_ORDER_OPTION
@_provider_options
@click.option("--probe", is_flag=True,
              help="Also connect to the MCP servers its mcp nodes use and check tool names "
              "and arguments against their schemas (docs/mcp.md).")  # fmt: skip
def validate(
    workflow: str, output_format: str, data_order: bool | None, probe: bool,
    provider_files: tuple[str, ...] = (), provider_flags: tuple[str, ...] = (),
) -> None:  # fmt: skip
    """Run every static check on WORKFLOW; execute nothing."""
    from fanflow._gc import gc_paused
    from fanflow.compile.compiled import compile_workflow
    from fanflow.io.provider_config import overrides
    from fanflow.load.reader import data_order_override, parse_source

    try:
        providers = _cli_providers(provider_files, provider_flags)
        with gc_paused(), data_order_override(data_order), overrides(providers):
            compiled = compile_workflow(parse_source(_workflow_file(workflow)))
        if probe and any(n.type == "mcp" for n in compiled.workflow.nodes):
            from fanflow.mcp.probe import probe_workflow

            found = probe_workflow(compiled.workflow)
            if found:
                raise WorkflowInvalid(found)
    except FanflowError as exc:
        fail(exc, output_format)
    nodes, edges = len(compiled.graph.ids), len(compiled.graph.edges)
    for warning in compiled.warnings:
        click.echo(f"warning: {warning}", err=True)
    if output_format == "json":
        _out(json.dumps({"status": "valid", "workflow": workflow, "nodes": nodes, "edges": edges,
                         "warnings": list(compiled.warnings)}))  # fmt: skip
    else:
        _out(f"{workflow}: valid ({nodes} nodes, {edges} edges)")


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("workflow", type=click.Path())
@click.argument("inputs", nargs=-1)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=None,
    help="Global cap on running node executions and batch items (default 256).",
)
@_FORMAT_OPTION
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
@STORE_OPTION
@click.option("--no-checkpoint", is_flag=True, help="Do not record this run in the run store.")
@click.option(
    "--executor",
    default=None,
    metavar="thread|process|dask[=ADDRESS]",
    help="Where sync nodes (code) run: threads (default), worker processes, or a Dask cluster"
    " (docs/executors.md).",
)
@click.option("--no-cache", is_flag=True, help="Bypass the llm response cache (docs/llm.md).")
@click.option("-q", "--quiet", "-p", is_flag=True, help="No progress on stderr (-p as in pflow).")
@_DATA_ORDER_OPTION
@_provider_options
def run(
    workflow: str, inputs: tuple[str, ...], max_concurrent: int | None, output_format: str,
    trace_path: str | None, timeline_path: str | None, limit_specs: tuple[str, ...],
    resume_ref: str | None, store_path: str | None, no_checkpoint: bool, quiet: bool,
    data_order: bool | None, no_cache: bool, executor: str | None = None,
    provider_files: tuple[str, ...] = (), provider_flags: tuple[str, ...] = (),
) -> None:  # fmt: skip
    """Run WORKFLOW with inputs given as name=value (data piped in goes to a `stdin: true`
    input)."""
    import fanflow
    from fanflow.load.reader import data_order_override
    from fanflow.validate.inputs import parse_cli_pairs

    try:
        pairs = parse_cli_pairs(inputs)
        providers = _cli_providers(provider_files, provider_flags)
        stdin_input = _stdin_input(workflow) if _piped() else None
        if stdin_input is not None and stdin_input not in pairs:  # pflow's piped data
            pairs[stdin_input] = sys.stdin.read()
        with _stdout_to_stderr(), data_order_override(data_order):
            result = fanflow.run(
                _workflow_file(workflow), pairs if pairs or not resume_ref else None,
                inputs_from_text=True, max_concurrent=max_concurrent, limits=limit_specs,
                store=None if no_checkpoint and not resume_ref else _store(store_path),
                checkpoint=not no_checkpoint,
                resume=resume_ref, trace=trace_path, timeline=timeline_path,
                progress=None if quiet else sys.stderr, summary=True, handle_signals=True,
                cache=not no_cache, executor=executor, providers=providers,
            )  # fmt: skip
    except FanflowError as exc:
        from fanflow.store.runs import UnknownRun

        if isinstance(exc, UnknownRun):  # name the option the id came from
            exc = WorkflowInvalid([Problem(str(exc), field="--resume")])
        fail(exc, output_format)
    # Any other exception is a bug (ours, or a custom node's or listener's): LazyGroup.main
    # reports it as an internal error, without a traceback.
    if output_format == "json":
        _out(json.dumps(result.to_json(), default=str))
    else:
        outputs = result.outputs
        raw = result.stdout_output
        if raw is not None and raw in outputs:  # `stdout: true`: that output alone, as it is
            outputs = {raw: outputs[raw]}
        for name, value in outputs.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            _out(f"{name}: {text}" if len(outputs) > 1 else text)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.summary_text and not quiet:
        click.echo(result.summary_text, err=True)
    if result.status == "failed":
        click.echo(f"error: {result.error}", err=True)
    code = {"success": 0, "failed": 1, "cancelled": EXIT_INTERRUPTED}[result.status]
    if result.signal is not None:  # 128 + n as a shell shows it: SIGINT 130, TERM 143, HUP 129
        code = 128 + result.signal
    _exit(code)


def _store(path: str | None) -> Any:
    from fanflow.store.runs import RunStore

    return RunStore(Path(path) if path else None)


def _exit(code: int) -> NoReturn:
    """Exit now even if a cancelled sync node's thread is still busy (threads can't be killed)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            if stream is sys.stdout:
                _silence_stdout()
        except (OSError, ValueError):
            pass
    if any(t.name.startswith("fanflow") and t.is_alive() for t in threading.enumerate()):
        os._exit(code)
    sys.exit(code)


@click.command()
def schema() -> None:
    """Print the JSON Schema of the workflow format (for editors and agents)."""
    from fanflow.load.model import json_schema

    _out(json.dumps(json_schema(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
