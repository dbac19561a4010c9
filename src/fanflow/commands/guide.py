"""`fanflow guide`: a concise guide for an AI agent authoring workflows (see fanflow.guide)."""

from __future__ import annotations

import click


@click.command("guide")
def guide() -> None:
    """Print a guide to writing workflows: node types, templates, parallel forms, examples."""
    from fanflow.guide import build_guide

    click.echo(build_guide(), nl=False)
