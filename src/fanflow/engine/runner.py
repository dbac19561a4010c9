"""run(): load, check inputs, build the runtime, schedule, resolve declared outputs."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanflow import templates
from fanflow.engine import events as ev
from fanflow.engine.context import RunContext
from fanflow.engine.events import EventBus, Listener
from fanflow.engine.inputs import resolve_inputs
from fanflow.engine.scheduler import NodeRecord, Runtime, Scheduler, build_policies, classify
from fanflow.engine.state import ResumeState
from fanflow.errors import Problem, WorkflowInvalid
from fanflow.ir.load import load_workflow
from fanflow.ir.model import Workflow
from fanflow.nodes import registry

DEFAULT_MAX_CONCURRENT = 256


@dataclass
class NodeResult:
    status: str
    duration_ms: float
    action: str | None = None
    error: str | None = None
    attempts: int = 0


@dataclass
class RunResult:
    run_id: str
    status: str  # success | failed | cancelled
    outputs: dict[str, Any]
    duration_ms: float
    nodes: dict[str, NodeResult]
    store: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)
    error: str | None = None
    failed_node: str | None = None
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None  # filled by the CLI's SummaryCollector when present

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def to_json(self) -> dict[str, Any]:
        """The `--output-format json` object (DESIGN.md)."""
        return {
            "status": self.status,
            "outputs": self.outputs,
            "duration_ms": round(self.duration_ms, 3),
            "nodes": {
                k: {"status": v.status, "duration_ms": round(v.duration_ms, 3)}
                | ({"action": v.action} if v.action not in (None, "default") else {})
                | ({"error": v.error} if v.error else {})
                | ({"attempts": v.attempts} if v.attempts > 1 else {})
                for k, v in self.nodes.items()
            },
            "error": self.error,
            "failed_node": self.failed_node,
            "run_id": self.run_id,
            "warnings": self.warnings,
        } | ({"summary": self.summary} if self.summary is not None else {})


def _as_workflow(workflow: Workflow | str | Path | dict[str, Any]) -> Workflow:
    if isinstance(workflow, Workflow):
        if workflow._graph is None:
            from fanflow.ir.validate import validate_workflow

            validate_workflow(workflow)
        return workflow
    return load_workflow(workflow)


def preflight(workflow: Workflow) -> None:
    """Checks that need the environment (API keys), done before anything runs."""
    problems = []
    seen = set()
    for i, node in enumerate(workflow.nodes):
        check = getattr(registry.get_node_class(node.type), "preflight", None)
        if check is None:
            continue
        message = check(node.params)
        if message and message not in seen:
            seen.add(message)
            problems.append(Problem(message, workflow.source, f"nodes[{i}]", node.id))
    if problems:
        raise WorkflowInvalid(problems)


async def run_async(
    workflow: Workflow | str | Path | dict[str, Any],
    inputs: dict[str, Any] | None = None,
    *,
    max_concurrent: int | None = None,
    listeners: list[Listener] | tuple[Listener, ...] = (),
    resume: ResumeState | None = None,
    limits: list[str] | tuple[str, ...] | None = None,
    run_id: str | None = None,
    inputs_from_text: bool = False,
    handle_sigint: bool = False,
    workflow_name: str | None = None,
) -> RunResult:
    """Run a workflow on the running event loop. Raises WorkflowInvalid (exit 2) before any node
    runs when the workflow, inputs or environment are invalid; otherwise returns a RunResult.

    `limits` are override specs such as "llm:openai=10/600rpm", merged field by field over the
    workflow's `limits` section and the FANFLOW_LIMITS environment variable."""
    wf = _as_workflow(workflow)
    values = resolve_inputs(wf, dict(inputs or {}), from_text=inputs_from_text)
    preflight(wf)
    graph = wf.graph
    classes = {n.id: registry.get_node_class(n.type) for n in wf.nodes}
    budget_size = max_concurrent or wf.max_concurrent or DEFAULT_MAX_CONCURRENT
    loop = asyncio.get_running_loop()
    bus = EventBus(list(listeners))
    pool = ThreadPoolExecutor(max_workers=budget_size, thread_name_prefix="fanflow")
    run_id = run_id or (resume.run_id if resume else None) or _new_run_id()
    ctx = RunContext(run_id=run_id, bus=bus, pool=pool, loop=loop)
    if wf.limits or limits or os.environ.get("FANFLOW_LIMITS"):
        from fanflow.io.limits import LimitRegistry, merge_limits

        sections = {k: v.model_dump(exclude_none=True) for k, v in wf.limits.items()}
        ctx.limits = LimitRegistry(merge_limits(sections, limits or (), os.environ)) or None
    rt = Runtime(
        graph=graph, classes=classes, is_async=classify(classes), inputs=values, ctx=ctx,
        budget=asyncio.Semaphore(budget_size), resume=resume,
        records={i: NodeRecord() for i in graph.ids}, policies=build_policies(graph, classes),
        node_limits=_node_limit_keys(wf, classes, ctx.limits),
    )  # fmt: skip
    scheduler = Scheduler(rt, wf.on_error)
    if handle_sigint:
        loop.add_signal_handler(signal.SIGINT, scheduler.interrupt)
    started = time.perf_counter()
    gc_state = _quiet_gc()
    bus.emit(
        ev.RUN_STARTED, run_id=run_id, workflow=workflow_name or wf.source or wf.name or "<dict>",
        inputs=values, nodes=graph.ids, wall_start=time.time(), max_concurrent=budget_size,
        deps={i: sorted(graph.deps[i]) for i in graph.ids},
        batch_nodes=[n.id for n in wf.nodes if n.batch is not None],
    )  # fmt: skip
    try:
        try:
            await scheduler.run()
        finally:
            _restore_gc(gc_state)
            if handle_sigint:
                loop.remove_signal_handler(signal.SIGINT)
            await ctx.aclose()
            pool.shutdown(wait=False, cancel_futures=True)
        result = _result(wf, rt, scheduler, run_id, time.perf_counter() - started)
        bus.emit(ev.RUN_FINISHED, status=result.status, outputs=result.outputs, error=result.error,
                 failed_node=result.failed_node, duration_ms=result.duration_ms)  # fmt: skip
    finally:
        bus.close()  # listeners flush (checkpoints, trace) even if the run itself raised
    return result


def _quiet_gc() -> tuple[int, int, int]:
    """Keep the cyclic GC from rescanning the whole workflow over and over during a run.

    Objects alive before the run (graph, compiled templates, modules) are frozen out of
    collections, and young-generation collections run less often; measured on a 10,000-node
    chain this keeps per-node overhead flat instead of growing with the graph. Both settings are
    restored when the run ends.
    """
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(old[0], 50_000), max(old[1], 20), max(old[2], 20))
    return old


def _restore_gc(old: tuple[int, int, int]) -> None:
    gc.set_threshold(*old)
    gc.unfreeze()


def _node_limit_keys(wf: Workflow, classes: dict[str, Any], limits: Any) -> dict[str, list[str]]:
    """`node:<type>` limits apply around a leaf, except for types that take them themselves."""
    if not limits:
        return {}
    keys = {}
    for node in wf.nodes:
        if not getattr(classes[node.id], "limits_managed", False):
            found = limits.keys_for_node(node.type)
            if found:
                keys[node.id] = found
    return keys


def _result(wf: Workflow, rt: Runtime, sched: Scheduler, run_id: str, duration: float) -> RunResult:
    warnings = list(wf.warnings)
    outputs: dict[str, Any] = {}
    for name, spec in wf.outputs.items():
        try:
            outputs[name] = templates.render(templates.compile_value(spec.source), rt.lookup)
        except templates.MissingValue as exc:
            outputs[name] = None
            if sched.failure is None and not sched.interrupted:
                warnings.append(f"output '{name}' has no value: {exc}")
    nodes = {
        i: NodeResult(r.status, r.duration * 1000, r.action, r.error, r.attempts)
        for i, r in rt.records.items()
    }
    error = failed_node = None
    if sched.interrupted:
        status, error = "cancelled", "interrupted"
    elif sched.failure is not None or sched.failures:
        first = sched.failure or sched.failures[0]
        status, failed_node = "failed", first.node_id
        error = f"node '{first.node_id}' failed: {first}"
        if len(sched.failures) > 1:
            error += f" (and {len(sched.failures) - 1} more failed node(s))"
    else:
        status = "success"
    return RunResult(run_id, status, outputs, duration * 1000, nodes, rt.store, error,
                     failed_node, warnings)  # fmt: skip


def run(
    workflow: Workflow | str | Path | dict[str, Any],
    inputs: dict[str, Any] | None = None,
    **options: Any,
) -> RunResult:
    """Run a workflow to completion (blocking). See run_async for the options."""
    return asyncio.run(run_async(workflow, inputs, **options))


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
