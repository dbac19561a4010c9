"""One leaf execution (a node run or one batch item): prep → exec → post, with retries.

Per attempt, the leaf first acquires its resource limits (`node:<type>` and the keys its class
names: `llm:…`, `http:…`), then one slot of the global budget, so it never holds a slot while it
waits for a resource. It holds neither while it waits to retry. Sync nodes run their lifecycle on
the run's thread executor; async nodes on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fanflow import templates
from fanflow.compile.compiled import NodePlan
from fanflow.events import NODE_RETRY
from fanflow.execute.executors import run_remote
from fanflow.execute.state import RunState
from fanflow.io.limits import LimitRegistry
from fanflow.nodes.base import NodeShared


async def run_leaf(
    rs: RunState,
    plan: NodePlan,
    params: dict[str, Any],
    item: int | None,
    on_start: Callable[[], None],
) -> tuple[dict[str, Any], str, int]:
    """Run one leaf to completion: (outputs, action, attempts). Raises the last error, with
    `attempts` set on it. `on_start` is called each time an attempt gets its slot."""
    limits = rs.ctx.limits
    keys = _resource_keys(plan, params, limits) if limits else None
    policy = plan.policy
    attempt = 0
    fallback: Exception | None = None  # set for the final call of a PocketFlow exec_fallback
    node: Any = None
    while True:
        if fallback is None:
            attempt += 1
            node = _new_node(rs, plan, params, item, attempt)
        own: dict[str, Any] = {}
        shared = NodeShared(own, rs.inputs, rs.store)
        try:
            if keys:  # resource limits first, then the slot: no slot is held while waiting
                lease = await _wait_for_limits(rs, limits, keys)
                try:
                    action = await _in_slot(rs, plan, node, shared, fallback, on_start)
                finally:
                    await lease.__aexit__(None, None, None)
            else:
                action = await _in_slot(rs, plan, node, shared, fallback, on_start)
            return own, action or "default", attempt
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retry = fallback is None and policy.should_retry(attempt, exc)
            if not retry and fallback is None and _overrides_fallback(node, plan.is_async):
                fallback = exc  # one more call: PocketFlow's exec_fallback decides the outcome
                continue
            if not retry:
                exc.attempts = attempt  # type: ignore[attr-defined]
                raise
            wait = policy.delay(attempt, exc)
            if rs.emit is not None:
                rs.emit(NODE_RETRY, plan.id, item, attempt=attempt, error=str(exc), wait=wait)
            if wait > 0:
                await asyncio.sleep(wait)


async def _wait_for_limits(rs: RunState, limits: LimitRegistry, keys: list[str]) -> Any:
    """Acquire the limits (an entered context manager is returned). While waiting, this leaf
    counts as a limit waiter, so the scheduler lets unrelated work go ahead."""
    lease = limits.acquire(*keys)
    rs.limit_waiters += 1
    rs.on_limit_wait()
    try:
        await lease.__aenter__()
    finally:
        rs.limit_waiters -= 1
    return lease


async def _in_slot(
    rs: RunState,
    plan: NodePlan,
    node: Any,
    shared: NodeShared,
    fallback: Exception | None,
    on_start: Callable[[], None],
) -> Any:
    """prep → exec → post holding one slot of the global budget."""
    budget = rs.budget
    if not plan.holds_slot:  # it only waits on executions that take their own slots
        on_start()
        rs.limit_waiters += 1  # it holds no slot: the scheduler lets other work go ahead
        rs.on_limit_wait()
        try:
            return await _async_lifecycle(plan, node, shared, fallback)
        finally:
            rs.limit_waiters -= 1
    if not budget.take():
        await budget.wait()
    try:
        on_start()
        if not plan.is_async:
            executors = rs.ctx.executors
            remote = executors.remote_for(rs.ctx.workflow, plan) if executors else None
            if remote is not None:  # process / dask: exec there, prep and post here
                return await run_remote(remote, node, shared, fallback)
            return await rs.ctx.threads.submit(_sync, node, shared, fallback)
        return await _async_lifecycle(plan, node, shared, fallback)
    finally:
        budget.release()


async def _async_lifecycle(
    plan: NodePlan, node: Any, shared: NodeShared, fallback: Exception | None
) -> Any:
    # The base class's prep returns the params and its post stores a dict result: when the
    # class keeps them, they are done here instead of awaited (two coroutines per leaf).
    prep = await node.prep_async(shared) if plan.own_prep else node.params
    if fallback is None:
        res = await node.exec_async(prep)
    else:
        res = await node.exec_fallback_async(prep, fallback)
    if plan.own_post:
        return await node.post_async(shared, prep, res)
    if isinstance(res, dict):
        shared.update(res)
    return None


def failure_message(exc: BaseException) -> str:
    """What a failed node or item reports: the error's text, and for a template with no value
    the reason it has none."""
    if isinstance(exc, templates.MissingValue):
        return f"cannot resolve a template: {exc}"
    return str(exc) or type(exc).__name__


def _sync(node: Any, shared: NodeShared, fallback: Exception | None) -> Any:
    prep = node.prep(shared)
    res = node.exec(prep) if fallback is None else node.exec_fallback(prep, fallback)
    return node.post(shared, prep, res)


def _new_node(
    rs: RunState, plan: NodePlan, params: dict[str, Any], item: int | None, attempt: int
) -> Any:
    node = plan.cls()
    node.params = params
    node.node_id = plan.id
    node.item = item
    node.ctx = rs.ctx
    node.cur_retry = attempt - 1
    return node


def _resource_keys(plan: NodePlan, params: dict[str, Any], limits: LimitRegistry) -> list[str]:
    keys = limits.keys_for_node(plan.type)
    if plan.resource_keys is not None:
        keys = keys + list(plan.resource_keys(params, limits))
    return keys


def _overrides_fallback(node: Any, is_async: bool) -> bool:
    """PocketFlow's exec_fallback re-raises by default; only a user override changes the outcome."""
    impl = getattr(type(node), "exec_fallback_async" if is_async else "exec_fallback", None)
    return impl is not None and getattr(impl, "__qualname__", "").split(".")[0] not in (
        "Node", "AsyncNode", "BaseNode", "_ParallelBatchNode",
    )  # fmt: skip
