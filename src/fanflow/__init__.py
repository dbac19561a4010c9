"""fanflow: a workflow engine for LLM agents that runs fan-out/fan-in graphs at the speed of
their critical path. The public API is imported lazily so `fanflow --version` stays fast."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "load_workflow": "fanflow.ir.load",
    "validate_workflow": "fanflow.ir.validate",
    "run": "fanflow.engine.runner",
    "run_async": "fanflow.engine.runner",
    "RunResult": "fanflow.engine.runner",
    "NodeResult": "fanflow.engine.runner",
    "register_node": "fanflow.nodes.registry",
    "Node": "fanflow.nodes.base",
    "AsyncNode": "fanflow.nodes.base",
    "Param": "fanflow.nodes.base",
    "Workflow": "fanflow.ir.model",
    "WorkflowInvalid": "fanflow.errors",
    "NodeError": "fanflow.errors",
    "ResumeState": "fanflow.engine.state",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'fanflow' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
