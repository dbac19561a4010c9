"""`fanflow validate --probe`: connect to the MCP servers a workflow's `mcp` nodes name and check
each tool name and the arguments written literally against the server's tool list and input
schemas. Templated servers, tools and argument values are known only at run time: skipped."""

from __future__ import annotations

import asyncio
import difflib
import os
from typing import Any

from fanflow.errors import NodeError, Problem

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _literal(value: Any) -> bool:
    return not (isinstance(value, str) and "${" in value)


def probe_workflow(workflow: Any) -> list[Problem]:
    """The problems found by asking the servers (empty when all is well)."""
    return asyncio.run(_probe(workflow))


async def _probe(workflow: Any) -> list[Problem]:
    from fanflow.mcp.config import configured_servers, resolve_target
    from fanflow.mcp.pool import McpPool

    file = workflow.source
    base = os.path.dirname(os.path.abspath(file)) if file else None
    servers = configured_servers(workflow)
    problems: list[Problem] = []
    failed: set[str] = set()
    pool = McpPool()
    try:
        for i, node in enumerate(workflow.nodes):
            if node.type != "mcp":
                continue
            params = node.params
            server, tool = params.get("server"), params.get("tool")
            if not isinstance(server, str) or not _literal(server) or server not in servers:
                continue  # templated, or already reported by validation
            where = f"nodes[{i}].params"
            if server in failed:
                continue
            try:
                tools = await pool.list_tools(resolve_target(server, servers[server], base))
            except NodeError as exc:
                failed.add(server)
                problems.append(Problem(f"probe: {exc}", file, f"{where}.server", node.id,
                                        "check the server's command or url in mcp_servers"))  # fmt: skip
                continue
            if not isinstance(tool, str) or not _literal(tool):
                continue
            by_name = {t.name: t for t in tools}
            if tool not in by_name:
                close = difflib.get_close_matches(tool, list(by_name), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                problems.append(Problem(
                    f"server '{server}' has no tool '{tool}'", file, f"{where}.tool", node.id,
                    hint + f"its tools: {', '.join(sorted(by_name)) or 'none'}"))  # fmt: skip
                continue
            arguments = params.get("arguments")
            if isinstance(arguments, dict):
                problems += _check_arguments(
                    arguments, by_name[tool].input_schema or {}, file, where, node.id, tool
                )
    finally:
        await pool.aclose()
    return problems


def _check_arguments(
    arguments: dict[str, Any],
    schema: dict[str, Any],
    file: str | None,
    where: str,
    node: str,
    tool: str,
) -> list[Problem]:
    problems = []
    props: dict[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in arguments:
            desc = (props.get(name) or {}).get("description") or (props.get(name) or {}).get("type")
            problems.append(Problem(f"tool '{tool}' needs the argument '{name}'", file,
                                    f"{where}.arguments", node,
                                    f"add \"{name}\": …" + (f" ({desc})" if desc else "")))  # fmt: skip
    for name, value in arguments.items():
        prop = props.get(name)
        if prop is None:
            if props and schema.get("additionalProperties") is not True:
                close = difflib.get_close_matches(name, list(props), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                problems.append(Problem(f"tool '{tool}' has no argument '{name}'", file,
                                        f"{where}.arguments.{name}", node,
                                        hint + f"its arguments: {', '.join(props)}"))  # fmt: skip
            continue
        expected = prop.get("type") if isinstance(prop, dict) else None
        if isinstance(expected, str) and expected in _JSON_TYPES and _literal(value):
            ok = isinstance(value, _JSON_TYPES[expected]) and not (
                expected in ("integer", "number") and isinstance(value, bool)
            )
            if not ok:
                problems.append(Problem(
                    f"tool '{tool}': argument '{name}' should be {expected}, got "
                    f"{type(value).__name__}", file, f"{where}.arguments.{name}", node))  # fmt: skip
    return problems
