"""`fanflow timeline TRACE.json [-o out.html]`: a trace file → a self-contained HTML Gantt chart."""

from __future__ import annotations

from pathlib import Path

import click

from fanflow.errors import EXIT_INVALID


@click.command("timeline")
@click.argument("trace_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write (default: the trace file's name with .html).",
)
def timeline(trace_file: Path, output: Path | None) -> None:
    """Draw the Chrome trace TRACE_FILE (from `fanflow run --trace`) as an HTML timeline."""
    import json

    from fanflow.observe.timeline import load_trace, write_timeline

    out = output if output is not None else trace_file.with_suffix(".html")
    try:
        data = load_trace(trace_file)
    except FileNotFoundError:
        click.echo(f"error: {trace_file}: no such file", err=True)
        raise click.exceptions.Exit(EXIT_INVALID) from None
    except json.JSONDecodeError as exc:
        click.echo(
            f"error: {trace_file}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}", err=True
        )
        raise click.exceptions.Exit(EXIT_INVALID) from None
    except (ValueError, OSError) as exc:
        click.echo(f"error: {trace_file}: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_INVALID) from None
    try:
        write_timeline(data, out)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # events of the wrong shape
        click.echo(f"error: {trace_file}: not a readable Chrome trace ({exc})", err=True)
        raise click.exceptions.Exit(EXIT_INVALID) from None
    except OSError as exc:
        click.echo(f"error: cannot write {out}: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(f"timeline written to {out}", err=True)
