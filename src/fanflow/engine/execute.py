"""One leaf execution: a node run or a batch item. prep → exec → post, with retries.

A leaf holds one slot of the global budget while it runs (not while it waits to retry). Sync
nodes run their lifecycle on the run's thread pool; async nodes on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from fanflow.engine import events as ev
from fanflow.engine.retry import RetryPolicy
from fanflow.nodes.base import NodeShared, is_async_node

if TYPE_CHECKING:
    from fanflow.engine.scheduler import Runtime


def _sync_attempt(node: Any, shared: NodeShared, fallback_exc: BaseException | None) -> Any:
    prep = node.prep(shared)
    res = node.exec(prep) if fallback_exc is None else node.exec_fallback(prep, fallback_exc)
    return node.post(shared, prep, res)


async def _async_attempt(node: Any, shared: NodeShared, fallback_exc: BaseException | None) -> Any:
    prep = await node.prep_async(shared)
    if fallback_exc is None:
        res = await node.exec_async(prep)
    else:
        res = await node.exec_fallback_async(prep, fallback_exc)
    return await node.post_async(shared, prep, res)


async def _leaf(
    rt: Runtime, node_id: str, node: Any, asynchronous: bool, fallback_exc: Exception | None
) -> tuple[dict[str, Any], str]:
    """One attempt (or the fallback) under a budget slot and the node type's limits."""
    own: dict[str, Any] = {}
    shared = NodeShared(own, rt.inputs, rt.store)
    async with rt.budget:
        limit_keys = rt.node_limits.get(node_id)
        async with rt.ctx.limits.acquire(*limit_keys) if limit_keys else _NO_LIMIT:
            if asynchronous:
                action = await _async_attempt(node, shared, fallback_exc)
            else:
                action = await rt.loop.run_in_executor(
                    rt.pool, _sync_attempt, node, shared, fallback_exc
                )
    return own, action or "default"


_NO_LIMIT = contextlib.nullcontext()


def new_node(cls: Any, node_id: str, params: dict[str, Any], rt: Runtime) -> Any:
    node = cls()
    node.params = params
    node.node_id = node_id
    node.ctx = rt.ctx
    return node


async def execute(
    rt: Runtime,
    node_id: str,
    params: dict[str, Any],
    policy: RetryPolicy,
    item: int | None = None,
) -> tuple[dict[str, Any], str, int]:
    """Run one leaf to completion. Returns (outputs, action, attempts); raises the last error."""
    cls = rt.classes[node_id]
    asynchronous = rt.is_async[node_id]
    attempt = 0
    while True:
        attempt += 1
        node = new_node(cls, node_id, params, rt)
        node.cur_retry = attempt - 1
        try:
            own, action = await _leaf(rt, node_id, node, asynchronous, None)
            return own, action, attempt
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not policy.should_retry(attempt, exc):
                if hasattr(node, "exec_fallback") and _overrides_fallback(node):
                    own, action = await _leaf(rt, node_id, node, asynchronous, exc)
                    return own, action, attempt
                exc.attempts = attempt  # type: ignore[attr-defined]
                raise
            wait = policy.delay(attempt, exc)
            rt.bus.emit(ev.NODE_RETRY, node_id, item, attempt=attempt, error=str(exc), wait=wait)
            if wait > 0:
                await asyncio.sleep(wait)


def _overrides_fallback(node: Any) -> bool:
    """PocketFlow's exec_fallback re-raises by default; only a user override changes the outcome."""
    name = "exec_fallback_async" if is_async_node(node) else "exec_fallback"
    impl = getattr(type(node), name, None)
    return impl is not None and getattr(impl, "__qualname__", "").split(".")[0] not in (
        "Node", "AsyncNode", "BaseNode", "_ParallelBatchNode",
    )  # fmt: skip
