"""Node type registry: built-ins, entry points (`fanflow.nodes`), files on FANFLOW_NODE_PATH,
classes registered from Python, and `module:Class` import paths used directly as a type.

Built-ins are listed by import path so that `fanflow --version` imports none of them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

BUILTIN_NODES: dict[str, str] = {
    "shell": "fanflow.nodes.shell:ShellNode",
    "read-file": "fanflow.nodes.files:ReadFileNode",
    "write-file": "fanflow.nodes.files:WriteFileNode",
    "copy-file": "fanflow.nodes.files:CopyFileNode",
    "move-file": "fanflow.nodes.files:MoveFileNode",
    "delete-file": "fanflow.nodes.files:DeleteFileNode",
    "code": "fanflow.nodes.code:CodeNode",
    "http": "fanflow.nodes.http:HttpNode",
    "llm": "fanflow.nodes.llm:LlmNode",
    "merge": "fanflow.nodes.merge:MergeNode",
    "mcp": "fanflow.nodes.mcp:McpNode",
    "workflow": "fanflow.nodes.workflow:WorkflowNode",
    "agent": "fanflow.nodes.agent:AgentNode",
}

_registered: dict[str, Any] = {}
_discovered = False


def register_node(cls: Any, name: str | None = None) -> Any:
    """Register a node class (our Node/AsyncNode or a pocketflow Node subclass) under a type name."""
    type_name = name or getattr(cls, "type_name", "") or cls.__name__
    _registered[type_name] = cls
    return cls


def _import_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _discover() -> None:
    """Entry points and FANFLOW_NODE_PATH files, once per process."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="fanflow.nodes"):
        _registered.setdefault(ep.name, ep)
    for folder in filter(None, os.environ.get("FANFLOW_NODE_PATH", "").split(os.pathsep)):
        for file in sorted(Path(folder).glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"fanflow_user_nodes.{file.stem}", file)
            if spec and spec.loader:
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
                for value in vars(module).values():
                    name = getattr(value, "type_name", "") if isinstance(value, type) else ""
                    if name and value.__module__ == module.__name__:
                        _registered.setdefault(name, value)


def known_types() -> list[str]:
    _discover()
    return sorted(set(BUILTIN_NODES) | set(_registered))


def get_node_class(type_name: str) -> Any:
    """Return the class for a type name; raises KeyError when unknown."""
    if type_name in _registered:
        entry = _registered[type_name]
        if hasattr(entry, "load") and not isinstance(entry, type):  # an entry point
            entry = _registered[type_name] = entry.load()
        return entry
    if type_name in BUILTIN_NODES:
        cls = _registered[type_name] = _import_path(BUILTIN_NODES[type_name])
        return cls
    if ":" in type_name:
        cls = _registered[type_name] = _import_path(type_name)
        return cls
    _discover()
    if type_name in _registered:
        return get_node_class(type_name)
    raise KeyError(type_name)
