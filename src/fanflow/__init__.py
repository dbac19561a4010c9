"""fanflow: a workflow engine for LLM agents that runs fan-out/fan-in graphs at the speed of
their critical path. The public API is imported lazily so `fanflow --version` stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "load_workflow": "fanflow.load.reader",
    "compile_workflow": "fanflow.compile.compiled",
    "CompiledWorkflow": "fanflow.compile.compiled",
    "run": "fanflow.api",
    "run_async": "fanflow.api",
    "RunResult": "fanflow.api",
    "NodeResult": "fanflow.execute.state",
    "Status": "fanflow.status",
    "Event": "fanflow.events",
    "Listener": "fanflow.events",
    "register_node": "fanflow.nodes.registry",
    "Node": "fanflow.nodes.base",
    "AsyncNode": "fanflow.nodes.base",
    "Param": "fanflow.nodes.base",
    "Workflow": "fanflow.load.model",
    "WorkflowInvalid": "fanflow.errors",
    "NodeError": "fanflow.errors",
    "ResumeState": "fanflow.execute.resume_state",
    "generate": "fanflow.generator",
    "generate_async": "fanflow.generator",
    "Generated": "fanflow.generator",
}

__all__ = [
    "AsyncNode",
    "CompiledWorkflow",
    "Event",
    "Generated",
    "Listener",
    "Node",
    "NodeError",
    "NodeResult",
    "Param",
    "ResumeState",
    "RunResult",
    "Status",
    "Workflow",
    "WorkflowInvalid",
    "__version__",
    "compile_workflow",
    "generate",
    "generate_async",
    "load_workflow",
    "register_node",
    "run",
    "run_async",
]

if TYPE_CHECKING:  # the names as the type checker sees them; at run time they load on first use
    from fanflow.api import RunResult, run, run_async
    from fanflow.compile.compiled import CompiledWorkflow, compile_workflow
    from fanflow.errors import NodeError, WorkflowInvalid
    from fanflow.events import Event, Listener
    from fanflow.execute.resume_state import ResumeState
    from fanflow.execute.state import NodeResult
    from fanflow.generator import Generated, generate, generate_async
    from fanflow.load.model import Workflow
    from fanflow.load.reader import load_workflow
    from fanflow.nodes.base import AsyncNode, Node, Param
    from fanflow.nodes.registry import register_node
    from fanflow.status import Status


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'fanflow' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
