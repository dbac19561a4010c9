"""`fanflow mcp serve [--http HOST:PORT]`: fanflow as an MCP server (docs/mcp.md)."""

from __future__ import annotations

import click

from fanflow.cli import STORE_OPTION


@click.group("mcp")
def mcp() -> None:
    """MCP: serve fanflow to agents (workflows call MCP tools with the `mcp` node type)."""


@mcp.command("serve")
@click.option(
    "--http",
    "http",
    default=None,
    metavar="HOST:PORT",
    help="Serve streamable HTTP on HOST:PORT (host defaults to 127.0.0.1) instead of stdio.",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="The global budget shared by every run the server starts.",
)
@STORE_OPTION
def serve(http: str | None, max_concurrent: int, store_path: str | None) -> None:
    """Serve fanflow's tools (run, start, status, cancel, resume, validate, plan, guide, nodes,
    runs_list, runs_show) over stdio, or streamable HTTP with --http."""
    from fanflow.cli import CommandFailed

    try:
        from fanflow.mcp.server import parse_http, serve
    except ImportError as exc:  # the optional extra is missing
        raise CommandFailed(f"the MCP server needs the mcp package: {exc}",
                            hint="pip install 'fanflow[mcp]'") from None  # fmt: skip
    if http is not None:
        parse_http(http)  # a bad value is a usage error (exit 2) before anything starts
    try:
        serve(http, max_concurrent, store_path)
    except KeyboardInterrupt:
        pass
