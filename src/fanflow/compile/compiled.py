"""Compile a validated workflow into an immutable `CompiledWorkflow`: everything a run needs
that does not depend on the inputs, worked out once.

Compiling is a pure step: it reads the loaded workflow and writes nothing back into it, so
editing a workflow and compiling it again always runs the new version. A run never looks at the
loaded document again, only at this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanflow import templates
from fanflow.compile.graph import Graph
from fanflow.compile.topology import Topology
from fanflow.execute.retry import NO_RETRY, RetryPolicy
from fanflow.load.model import BatchSpec, Workflow
from fanflow.nodes import pocketflow_compat, registry
from fanflow.nodes.base import AsyncNode, Node, Scope, is_async_node
from fanflow.validate.params import checked_render

Render = Callable[[Any, Scope], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LoopPlan:
    """A node's `loop:` (validate/loops.py), its templates parsed."""

    condition: Any  # a whole template reading the node's own output
    until: bool  # stop when the condition holds (else: go on while it holds)
    carry: dict[str, Any]  # name → compiled template: the next pass's `inputs.<name>`
    max_iterations: int


@dataclass(frozen=True, slots=True)
class NodePlan:
    """One node, ready to execute: its class, its parsed params and how to render them."""

    id: str
    type: str
    cls: Any  # a fanflow Node/AsyncNode subclass, or a pocketflow one run unmodified
    is_async: bool
    own_prep: bool  # the class overrides prep_async (else the params are the prep result)
    own_post: bool  # the class overrides post_async (else a dict result becomes the outputs)
    params: Any  # compiled params: strings holding ${...} are parsed templates
    static: bool  # no template anywhere in params: rendering is a copy
    render: Render  # the class's render_params hook
    joins_on_first: bool  # starts when one upstream succeeds (a race), not all
    resource_keys: Callable[..., list[str]] | None  # the class's resource_keys hook
    policy: RetryPolicy  # attempts of one execution (a node run or one batch item)
    batch: BatchSpec | None
    batch_items: Any  # compiled batch.items
    handles_error: bool  # an `error` edge leaves this node: a failure takes that edge
    holds_slot: bool = True  # the class's holds_slot: its lifecycle takes a budget slot
    loop: LoopPlan | None = None  # runs again while/until its own output says so
    executor: str | None = None  # the node's own `executor` (execute/executors.py chooses)


@dataclass(frozen=True, slots=True)
class CompiledWorkflow:
    workflow: Workflow  # the document as loaded; read, never written
    graph: Graph
    nodes: dict[str, NodePlan]
    topology: Topology  # the component DAG as the scheduler's readiness state reads it
    outputs: dict[str, Any]  # declared output name → compiled source template
    warnings: tuple[str, ...]

    @property
    def source(self) -> str | None:
        return self.workflow.source

    @property
    def name(self) -> str | None:
        return self.workflow.name

    @property
    def label(self) -> str:
        """How events and the run store name the workflow: its file, else its name."""
        return self.workflow.source or self.workflow.name or "<dict>"


def compile_workflow(workflow: Workflow | str | Path | dict[str, Any]) -> CompiledWorkflow:
    """Validate (raises WorkflowInvalid with every problem) and compile. Given a path or a dict,
    load it first."""
    from fanflow.validate.checks import check_workflow

    if not isinstance(workflow, Workflow):
        from fanflow.load.reader import parse_source

        workflow = parse_source(workflow)

    graph, warnings = check_workflow(workflow)
    plans = {}
    kinds: dict[Any, _Kind] = {}  # what a node class gives every node of its type
    for spec in workflow.nodes:
        # a PocketFlow batch/flow object runs through its adapter (nodes/pocketflow_compat.py)
        cls = pocketflow_compat.adapt(registry.get_node_class(spec.type))
        kind = kinds.get(cls) or kinds.setdefault(cls, _Kind.of(cls))
        params = graph.params[spec.id]
        joins = kind.joins_on_first
        plans[spec.id] = NodePlan(
            id=spec.id,
            type=spec.type,
            cls=cls,
            is_async=kind.is_async,
            own_prep=kind.own_prep,
            own_post=kind.own_post,
            params=params,
            static=spec.id in graph.static_params and not kind.own_render,
            render=checked_render(cls, kind.render, params),  # typed params holding a template
            joins_on_first=bool(joins(spec.params)) if joins is not None else False,
            resource_keys=kind.resource_keys,
            policy=_policy(spec, kind.policy),
            batch=spec.batch,
            batch_items=graph.batch_items.get(spec.id),
            handles_error=any(e.action == "error" for e in graph.out_edges[spec.id]),
            holds_slot=kind.holds_slot,
            loop=_loop(spec.loop) if spec.loop is not None else None,
            executor=spec.executor,
        )
    join_first = [not c.is_loop and plans[c.entry].joins_on_first for c in graph.components]
    outputs = {name: templates.compile_value(o.source) for name, o in workflow.outputs.items()}
    topology = Topology.of(graph, join_first)
    return CompiledWorkflow(workflow, graph, plans, topology, outputs, tuple(warnings))


_NODE_RENDER = Node.render_params.__func__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Kind:
    """What a node class gives every node of its type, looked up once per class."""

    render: Any
    own_render: bool
    is_async: bool
    own_prep: bool
    own_post: bool
    joins_on_first: Any
    resource_keys: Any
    policy: RetryPolicy  # when neither the IR's retry nor the batch's max_retries is given
    holds_slot: bool

    @classmethod
    def of(cls, node_cls: Any) -> _Kind:
        render = getattr(node_cls, "render_params", None) or _default_render
        return cls(
            render=render,
            own_render=getattr(render, "__func__", None) is not _NODE_RENDER,
            is_async=is_async_node(node_cls),
            own_prep=_overrides(node_cls, "prep_async"),
            own_post=_overrides(node_cls, "post_async"),
            joins_on_first=getattr(node_cls, "joins_on_first", None),
            resource_keys=getattr(node_cls, "resource_keys", None),
            policy=_class_policy(node_cls),
            holds_slot=bool(getattr(node_cls, "holds_slot", True)),
        )


def _loop(spec: Any) -> LoopPlan:
    text = spec.until if spec.until is not None else spec.while_
    carry = {name: templates.compile_value(t) for name, t in spec.carry.items()}
    return LoopPlan(templates.parse(text), spec.until is not None, carry, spec.max_iterations)


def _default_render(compiled: Any, scope: Scope) -> dict[str, Any]:
    return _NODE_RENDER(Node, compiled, scope)


def _overrides(cls: Any, name: str) -> bool:
    """Whether an async node class replaces fanflow's default `name` (foreign classes always
    count as overriding: their lifecycle is run exactly as written)."""
    return getattr(cls, name, None) is not getattr(AsyncNode, name)


def _policy(spec: Any, default: RetryPolicy) -> RetryPolicy:
    """The batch's `max_retries` (per item) wins; else the IR's `retry`; else the class's."""
    if spec.batch is not None and _retries_given(spec.batch):
        return RetryPolicy(attempts=spec.batch.max_retries, wait=spec.batch.retry_wait)
    if spec.retry is not None:
        r = spec.retry
        return RetryPolicy(r.max_attempts, r.wait, r.backoff, r.max_wait)
    return default


def _class_policy(cls: Any) -> RetryPolicy:
    """The node type's default (llm/http retry transient failures); else PocketFlow's
    max_retries/wait."""
    default = getattr(cls, "default_attempts", None)
    if default is not None:
        if default > 1:
            return RetryPolicy(default, 1.0, "exponential", 30.0, transient_only=True)
        return NO_RETRY
    probe = cls()  # a foreign (PocketFlow) node: honour its own settings
    attempts = int(getattr(probe, "max_retries", 1) or 1)
    if attempts > 1:
        return RetryPolicy(attempts, float(getattr(probe, "wait", 0) or 0))
    return NO_RETRY


def _retries_given(batch: BatchSpec) -> bool:
    return "max_retries" in batch.fields_set
