"""Resuming a run: what an earlier attempt completed, and whether it may be reused.

The rule (docs/durable-runs.md): each node has a hash over its definition (type, params, batch,
retry, and its incoming edges). A resume starts from the stored nodes that completed *and* whose
upstream all settled (completed or skipped) — an upstream-closed set, so the replay is a prefix of
a real execution. It is refused when

- the inputs differ in any way (custom nodes can read inputs without templates, so we cannot tell
  which nodes depend on which input), or
- a node whose definition changed (or that is new), or anything downstream of it, is among the
  nodes the resume would reuse: their stored outputs were computed from the old definition.

Changed nodes that did not complete, and their descendants, simply run (a changed batch node that
had completed some items runs all of its items again).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from fanflow.errors import Problem, WorkflowInvalid
from fanflow.execute.resume_state import CompletedNode, ResumeState
from fanflow.observe.redact import MASK, stored_inputs
from fanflow.store.runs import (
    NodeState,
    RunRecord,
    RunStore,
    encode_value,
    workflow_document,
    workflow_name,
)

# Node fields that do not change what a node computes.
_COSMETIC = {"id", "purpose", "batch_config"}


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def node_hashes(workflow: Any) -> dict[str, str]:
    """{node_id: hash of its definition and incoming edges}, in workflow order."""
    graph = workflow.graph
    nodes: dict[str, str] = {}
    for node_id in graph.ids:
        spec = graph.specs[node_id]
        body = spec.to_dict(exclude=_COSMETIC)
        body["__in__"] = sorted([e.src, e.action] for e in graph.in_edges[node_id])
        nodes[node_id] = _digest(body)
    return nodes


def _stored_node_hashes(store: RunStore, run: RunRecord) -> dict[str, str] | None:
    """Node hashes of the document the run ran (None when it cannot be read back)."""
    doc = store.workflow_doc(run.workflow_hash)
    if doc is None:
        return None
    from fanflow.compile.compiled import compile_workflow
    from fanflow.load.reader import parse_source

    try:
        return node_hashes(compile_workflow(parse_source(json.loads(doc))))
    except Exception:  # a snapshot an older fanflow wrote and this one no longer accepts
        return None


def normalise_inputs(inputs: dict[str, Any]) -> Any:
    """Inputs as they round-trip through the store (tuples become lists, ...)."""
    try:
        return json.loads(encode_value(inputs))
    except Exception:
        return {k: repr(v) for k, v in inputs.items()}


@dataclass
class ResumePlan:
    """What `load_resume` decided, with human-readable notes (for stderr) on what re-runs."""

    state: ResumeState
    run: RunRecord
    restored: list[str]  # completed nodes that will be replayed, workflow order
    rerun: list[str]  # nodes that will run (again)
    partial_items: dict[str, int]  # batch node -> stored items reused
    notes: list[str] = field(default_factory=list)


def load_resume(
    store: RunStore,
    ref: str,
    workflow: Any,
    inputs: dict[str, Any],
    workflow_path: str | os.PathLike[str] | None = None,
) -> ResumeState:
    """The state a resumed run starts from. See `plan_resume`."""
    return plan_resume(store, ref, workflow, inputs, workflow_path).state


def plan_resume(
    store: RunStore,
    ref: str,
    workflow: Any,
    inputs: dict[str, Any],
    workflow_path: str | os.PathLike[str] | None = None,
) -> ResumePlan:
    """Decide what to reuse from run `ref` (an id, a unique prefix, or "last": the most recent
    run of this workflow file). Raises UnknownRun (exit 2) when there is no such run, and
    WorkflowInvalid (exit 2) when resuming would be unsafe (see the module docstring)."""
    path = workflow_path if workflow_path is not None else getattr(workflow, "source", None)
    wf_name = workflow_name(path, workflow)
    run = store.get_run(ref, workflow=wf_name if ref.strip() == "last" else None)
    where = f"run {run.id}"
    fresh = "start a fresh run (drop --resume), or undo the change"

    if run.alive:
        raise WorkflowInvalid(
            [
                Problem(
                    f"cannot resume {where}: it is still running (pid {run.pid})",
                    hint="wait for it to finish or stop it first",
                )
            ]
        )

    # Inputs: any difference refuses (see module docstring). They are compared as the store
    # keeps them, so a secret input is compared only for being given (its value may change:
    # credentials get rotated) and an input that held a secret must be given again.
    spec = getattr(workflow, "workflow", workflow)
    old_inputs = normalise_inputs(run.inputs)
    new_inputs = normalise_inputs(stored_inputs(spec, inputs))
    if old_inputs != new_inputs:
        names = sorted(
            k
            for k in set(old_inputs) | set(new_inputs)
            if old_inputs.get(k, _MISSING) != new_inputs.get(k, _MISSING)
        )
        hint = f"pass the original inputs, or {fresh}"
        masked = [n for n in names if old_inputs.get(n) == MASK]
        if masked:
            hint = (f"the run store keeps no value for {', '.join(masked)} (a secret, or holding "
                    f"one): give {'them' if len(masked) > 1 else 'it'} again, or {fresh}")  # fmt: skip
        raise WorkflowInvalid(
            [
                Problem(
                    f"cannot resume {where}: the inputs changed ({', '.join(names)}); "
                    "a resume must use the same inputs as the run it continues",
                    field=f"inputs.{names[0]}" if len(names) == 1 else "inputs",
                    hint=hint,
                )
            ]
        )

    graph = workflow.graph
    new_digest, _ = workflow_document(workflow, path)
    snapshot = True
    if new_digest is not None and new_digest == run.workflow_hash:
        changed: list[str] = []  # the very same document: nothing to compare
    else:
        new_hashes = node_hashes(workflow)
        old_hashes = _stored_node_hashes(store, run)
        snapshot = old_hashes is not None
        changed = [n for n in graph.ids if (old_hashes or {}).get(n) != new_hashes[n]]
    affected = _downstream(graph, changed)

    states = store.node_states(run.id, with_outputs=True)
    restored_set, notes = _restorable(graph, states)

    conflicts = [n for n in graph.ids if n in affected and n in restored_set]
    if conflicts:
        what = ", ".join(f"'{n}'" for n in changed)
        stale = ", ".join(f"'{n}'" for n in conflicts)
        if snapshot:
            message = (
                f"cannot resume {where}: the workflow changed since it ran — node(s) {what} "
                f"changed or are new, which invalidates the stored outputs of completed "
                f"node(s) {stale} (computed from the old definition)"
            )
        else:
            message = (
                f"cannot resume {where}: the store has no readable copy of the workflow it ran, "
                f"so its completed node(s) {stale} cannot be matched to this workflow"
            )
        raise WorkflowInvalid([Problem(message, file=str(path) if path else None, hint=fresh)])

    state = ResumeState(run_id=run.id)
    for node_id in graph.ids:
        if node_id in restored_set:
            st = states[node_id]
            state.nodes[node_id] = CompletedNode(outputs=st.outputs, action=st.action or "default")

    # Nodes inside sub-workflows (`each[3]/score`): reused when their top-level node re-runs
    # with the same definition and the same upstream, so an unfinished child run continues.
    def child_reusable(node_id: str) -> bool:
        root = node_id.split("/", 1)[0].split("[", 1)[0]
        return (
            root in graph.specs
            and root not in restored_set
            and root not in affected
            and all(d in restored_set for d in graph.deps[root])
        )

    for node_id, st in states.items():
        if "/" in node_id and st.status == "success" and st.has_outputs and child_reusable(node_id):
            state.nodes[node_id] = CompletedNode(outputs=st.outputs, action=st.action or "default")

    partial: dict[str, int] = {}
    items = store.item_results(run.id)
    for node_id, st in states.items():
        # A finished `continue` batch with failures: its successful items come from its outputs.
        if (
            node_id in graph.specs
            and node_id not in restored_set
            and _failed_items(graph, node_id, st)
        ):
            results = st.outputs.get("results") or []
            failed = {e.get("index") for e in st.outputs.get("errors") or []}
            items[node_id] = {
                i: r for i, r in enumerate(results) if r is not None and i not in failed
            } | items.get(node_id, {})
    for node_id, results in items.items():
        if "/" in node_id and results and child_reusable(node_id):
            state.items[node_id] = results  # a batch inside a sub-workflow
            continue
        if node_id in restored_set or node_id not in graph.specs or not results:
            continue
        if graph.specs[node_id].batch is None:
            continue
        if node_id in affected:
            notes.append(
                f"batch '{node_id}' changed (or depends on a change): its {len(results)} stored "
                "item results are discarded and every item runs"
            )
            continue
        if not all(d in restored_set for d in graph.deps[node_id]):
            # its items list may come out differently once the upstream runs again
            notes.append(
                f"batch '{node_id}': {len(results)} stored item results are discarded because "
                "its upstream runs again"
            )
            continue
        state.items[node_id] = results
        partial[node_id] = len(results)

    if changed:
        notes.insert(0, f"changed nodes run with their new definition: {', '.join(changed)}")
    if run.status == "success" and len(restored_set) == len(graph.ids):
        notes.append(f"{where} already succeeded; every node is replayed from the store")
    rerun = [n for n in graph.ids if n not in restored_set]
    restored = [n for n in graph.ids if n in restored_set]
    return ResumePlan(state, run, restored, rerun, partial, notes)


_MISSING = object()


def _downstream(graph: Any, roots: list[str]) -> set[str]:
    succ: dict[str, list[str]] = {n: [] for n in graph.ids}
    for n in graph.ids:
        for d in graph.deps[n]:
            if d in succ:
                succ[d].append(n)
    seen = set(roots)
    stack = list(roots)
    while stack:
        for nxt in succ[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _restorable(graph: Any, states: dict[str, NodeState]) -> tuple[set[str], list[str]]:
    """Completed nodes whose whole upstream settled, walking components in topological order.

    A node is *settled* when it is restored, or was skipped and its upstream settled (the replay
    makes the same decision again). A loop is all-or-nothing: restored only when every member
    settled in the last attempt, since its stored rows describe each member's last visit."""
    restored: set[str] = set()
    settled: set[str] = set()
    notes: list[str] = []
    for comp in graph.components:  # topological order of the component DAG
        members = set(comp.nodes)
        external_ok = all(
            d in settled for n in comp.nodes for d in graph.deps[n] if d not in members
        )
        ok_nodes = []
        for n in comp.nodes:
            st = states.get(n)
            if st is None:
                continue
            if st.status == "success" and st.has_outputs and _failed_items(graph, n, st):
                notes.append(f"batch '{n}' had {_failed_items(graph, n, st)} failed item(s): "
                             "they run again, and so does what depends on it")  # fmt: skip
            elif (st.status == "success" and st.has_outputs) or st.status == "skipped":
                ok_nodes.append(n)
            elif st.status == "success":
                notes.append(f"'{n}' re-runs: {st.note or 'its outputs were not stored'}")
        if comp.is_loop:
            if not external_ok or len(ok_nodes) != len(comp.nodes):
                continue
            settled |= members
            restored |= {n for n in comp.nodes if states[n].status == "success"}
            continue
        n = comp.nodes[0]
        if n not in ok_nodes:
            continue
        if not external_ok:
            if states[n].status == "success":
                notes.append(f"'{n}' completed before but re-runs: its upstream runs again")
            continue
        settled.add(n)
        if states[n].status == "success":
            restored.add(n)
    return restored, notes


def _failed_items(graph: Any, node_id: str, st: NodeState) -> int:
    """How many items of a completed batch node failed (error_handling: continue)."""
    if graph.specs.get(node_id) is None or graph.specs[node_id].batch is None:
        return 0
    outputs = st.outputs if st.status == "success" and isinstance(st.outputs, dict) else {}
    return int(outputs.get("error_count") or 0)


def describe_plan(plan: ResumePlan) -> str:
    """One-paragraph summary for stderr: what is reused and what runs."""
    parts = [f"resuming run {plan.run.id}: {len(plan.restored)} completed node(s) reused"]
    if plan.partial_items:
        parts.append(", ".join(f"{n}: {k} item(s) reused" for n, k in plan.partial_items.items()))
    parts.append(f"{len(plan.rerun)} node(s) to run" if plan.rerun else "nothing left to run")
    lines = ["; ".join(parts)]
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)
