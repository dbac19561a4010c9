"""pflow's spelling of MCP nodes: `"type": "mcp-<server>-<tool>"` with the tool's arguments as
params, translated at load time into fanflow's `"type": "mcp"` so that validation, plan and resume
see one node type. Server names may hold `-`: the longest configured name that fits wins; with
none configured, the name runs to the first `-` (and validation then names the unknown server)."""

from __future__ import annotations

from typing import Any

PREFIX = "mcp-"


def translate_mcp_names(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with every `mcp-<server>-<tool>` node rewritten (a copy; the input is not
    changed). Documents without such nodes are returned as they are."""
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or not any(_is_candidate(n) for n in nodes):
        return doc
    names = _server_names(doc)
    out = []
    for node in nodes:
        if _is_candidate(node) and not _is_registered(node["type"]):
            split = _split(node["type"][len(PREFIX) :], names)
            if split is not None:
                server, tool = split
                params = node.get("params")
                node = {
                    **node,
                    "type": "mcp",
                    "params": {"server": server, "tool": tool,
                               "arguments": dict(params) if isinstance(params, dict) else {}},
                }  # fmt: skip
        out.append(node)
    return {**doc, "nodes": out}


def _is_candidate(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and isinstance(node.get("type"), str)
        and node["type"].startswith(PREFIX)
    )


def _is_registered(type_name: str) -> bool:
    """A node type really named `mcp-…` (a custom node) keeps its name."""
    from fanflow.nodes.registry import get_node_class

    try:
        get_node_class(type_name)
    except Exception:
        return False
    return True


def _server_names(doc: dict[str, Any]) -> list[str]:
    names = set(doc["mcp_servers"]) if isinstance(doc.get("mcp_servers"), dict) else set()
    from fanflow.errors import WorkflowInvalid
    from fanflow.mcp.config import load_user_servers

    try:
        names |= set(load_user_servers())
    except WorkflowInvalid:  # reported by the mcp node's validation
        pass
    return sorted(names, key=len, reverse=True)


def _split(rest: str, names: list[str]) -> tuple[str, str] | None:
    for name in names:  # longest first
        if rest.startswith(name + "-") and len(rest) > len(name) + 1:
            return name, rest[len(name) + 1 :]
    server, sep, tool = rest.partition("-")
    return (server, tool) if sep and server and tool else None
