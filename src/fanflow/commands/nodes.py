"""`fanflow nodes [NAME]`: list node types, or describe one (params and outputs).

Generated from the registry, like the node section of `fanflow guide`.
"""

from __future__ import annotations

import difflib
import json

import click

from fanflow.errors import EXIT_INVALID, EXIT_RUN_FAILED


@click.command("nodes")
@click.argument("name", required=False)
@click.option(
    "--output-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json prints the interface as one JSON object (for programs and agents).",
)
def nodes(name: str | None, output_format: str) -> None:
    """List node types, or describe the node type NAME."""
    from fanflow import guide
    from fanflow.cli import CommandFailed

    if name is None:
        rows = guide.node_summaries()
        if output_format == "json":
            click.echo(json.dumps({n: d for n, d in rows}, indent=2))
            return
        width = max((len(n) for n, _ in rows), default=0)
        for type_name, desc in rows:
            click.echo(f"{type_name.ljust(width)}  {desc}".rstrip())
        click.echo("\nDescribe one: fanflow nodes NAME", err=True)
        return

    known = guide.node_types()
    try:
        cls = guide.load_node_class(name)
    except KeyError:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise CommandFailed(f"unknown node type '{name}'{hint}", EXIT_INVALID,
                            hint=f"known types: {', '.join(known)}") from None  # fmt: skip
    except Exception as exc:  # the type exists but its module fails to import
        message = f"node type '{name}' cannot be loaded: {exc}"
        raise CommandFailed(message, EXIT_RUN_FAILED) from None
    if output_format == "json":
        click.echo(json.dumps(guide.node_info(name, cls), indent=2, default=str))
    else:
        click.echo(guide.describe_node(name, cls))
