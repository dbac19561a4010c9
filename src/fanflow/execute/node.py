"""Run one node: replay it when resuming, else render its params and run it as one leaf or as a
batch of leaves; keep its record, store its outputs, emit its events. Returns its action.

A failure an `error` edge handles becomes that edge's action (the node's outputs then carry
`error`); any other failure raises NodeFailed for the scheduler.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fanflow import templates
from fanflow.compile.compiled import NodePlan
from fanflow.errors import NodeError
from fanflow.events import NODE_FINISHED, NODE_STARTED
from fanflow.execute.batch import coerce_items, run_batch
from fanflow.execute.executors import ran_on
from fanflow.execute.leaf import failure_message, run_leaf
from fanflow.execute.loop import run_loop
from fanflow.execute.state import RunState
from fanflow.status import CANCELLED, FAILED, SUCCESS


class NodeFailed(Exception):
    """A node failed and no `error` edge handles it."""

    def __init__(self, node_id: str, message: str):
        super().__init__(message)
        self.node_id = node_id


async def run_node(rs: RunState, plan: NodePlan) -> str:
    node_id = plan.id
    record = rs.records[node_id]
    emit = rs.emit
    done = rs.resume.nodes.get(node_id) if rs.resume else None
    if done is not None and record.attempts == 0:
        # Resumed: replay the stored outputs and action as if the node had just run.
        rs.store[node_id] = done.outputs
        record.status, record.action = SUCCESS, done.action
        if emit is not None:
            emit(NODE_STARTED, node_id, resumed=True)
            emit(NODE_FINISHED, node_id, status=SUCCESS, action=done.action,
                 outputs=done.outputs, error=None, attempts=0, resumed=True)  # fmt: skip
        return done.action

    record.begin()  # a later loop visit starts clean
    t0 = 0.0

    def on_start() -> None:  # the node's work starts: it holds its slot (or, a batch, begins)
        nonlocal t0
        if t0 == 0.0:
            t0 = time.perf_counter()
            if emit is not None:
                emit(NODE_STARTED, node_id, None, **batch_size)

    batch_size: dict[str, Any] = {}
    try:
        if plan.batch is not None:
            items = coerce_items(node_id, templates.render(plan.batch_items, rs.lookup))
            batch_size["batch"] = len(items)
            on_start()
            outputs, action, attempts = await run_batch(rs, plan, items), "default", 1
        elif plan.loop is not None:
            outputs, action, attempts = await run_loop(rs, plan, on_start)
        else:
            params = dict(plan.params) if plan.static else plan.render(plan.params, rs.lookup)
            outputs, action, attempts = await run_leaf(rs, plan, params, None, on_start)
    except asyncio.CancelledError:
        on_start()
        record.status, record.duration_ms = CANCELLED, (time.perf_counter() - t0) * 1000
        if emit is not None:
            emit(NODE_FINISHED, node_id, status=CANCELLED, action=None, outputs={},
                 error="cancelled", attempts=record.attempts)  # fmt: skip
        raise
    except Exception as exc:
        on_start()  # failed before its work began (e.g. a template with no value)
        return _failed(rs, plan, exc, time.perf_counter() - t0)
    record.duration_ms = (time.perf_counter() - t0) * 1000
    rs.store[node_id] = outputs
    record.status, record.action, record.attempts, record.error = SUCCESS, action, attempts, None
    if emit is not None:
        emit(NODE_FINISHED, node_id, status=SUCCESS, action=action, outputs=outputs,
             error=None, attempts=attempts, **ran_on())  # fmt: skip
    return action


def _failed(rs: RunState, plan: NodePlan, exc: Exception, duration: float) -> str:
    node_id = plan.id
    record = rs.records[node_id]
    message = failure_message(exc)
    partial = exc.outputs if isinstance(exc, NodeError) and exc.outputs else {}
    record.duration_ms = duration * 1000
    record.status, record.error = FAILED, message
    record.attempts = getattr(exc, "attempts", 1)
    record.handled = plan.handles_error
    if plan.handles_error or partial:
        rs.store[node_id] = {**partial, "error": message}
    else:
        rs.store.pop(node_id, None)  # an earlier loop visit's outputs are not this run's
    if plan.handles_error:
        record.action = "error"
    if rs.emit is not None:
        rs.emit(NODE_FINISHED, node_id, status=FAILED,
                action="error" if plan.handles_error else None,
                outputs=rs.store.get(node_id, {}), error=message, attempts=record.attempts,
                handled=plan.handles_error)  # fmt: skip
    if plan.handles_error:
        return "error"
    raise NodeFailed(node_id, message) from exc
